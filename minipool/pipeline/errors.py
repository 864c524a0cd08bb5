"""The failures a pipeline reports, one class each, all under :class:`MinipoolError`.

Technique: the ``websockets`` style of one exception class per failure a caller can act on.
Every message names the stage it came from, because in a pipeline of ten stages "ZeroDivisionError"
alone does not say where to look (seed 001's exception log: record which pipe failed and why).
"""

from __future__ import annotations

from ..errors import MinipoolError

__all__ = ["PipelineError", "StageDefinitionError", "StageFailed"]


class PipelineError(MinipoolError):
    """A pipeline was put together or used in a way that cannot work."""


class StageDefinitionError(PipelineError):
    """A stage cannot run as declared: wrong function kind, a function that cannot travel, ...

    Raised by ``run()``/``stream()`` before any record moves, so nothing needs cleaning up.
    """

    def __init__(self, stage: str, problem: str) -> None:
        super().__init__(f"stage {stage!r}: {problem}")
        self.stage = stage


class StageFailed(PipelineError):
    """A stage's function (or a source) raised; the pipeline stopped and shut its workers down.

    Attributes:
        stage: the failing stage's name.
        record: the record being processed (``None`` for a failing source).
        cause: the original exception (also chained as ``__cause__``).
    """

    def __init__(self, stage: str, cause: BaseException, record: object = None) -> None:
        where = "" if record is None else f" on record {_short(record)}"
        super().__init__(f"stage {stage!r} failed{where}: {type(cause).__name__}: {cause}")
        self.stage = stage
        self.record = record
        self.cause = cause


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
