"""The write-ahead log: records, segments and snapshots, below both the cluster and the pipeline.

Technique: Redis's AOF + RDB persistence in miniature (seed 001's recovery log, seed 000
§2.2-2.3 on state and backups). A process that keeps its state in memory writes every change
here before acting on it and snapshots that state now and then; on restart it replays the
newest snapshot and the records after it. The package knows nothing about what the records
mean: the coordinator journals tasks (:mod:`minipool.cluster.task_journal`), a durable pipeline
journals what reaches its terminal stage (:class:`minipool.pipeline.channels.DurableChannel`).

* :mod:`.format` -- the files on disk: framing, headers, reading them back with damage;
* :mod:`.log` -- :class:`Journal`: appending, fsync policies, group commit, rotation, recovery.

``python -m minipool.journal [DIR]`` measures appends per second under every fsync policy.
"""

from .format import JournalError, Replay, pack_records, read_journal, unpack_records
from .log import FSYNC_POLICIES, Journal, measure_appends

__all__ = [
    "Journal",
    "JournalError",
    "Replay",
    "read_journal",
    "FSYNC_POLICIES",
    "pack_records",
    "unpack_records",
    "measure_appends",
]
