"""One coordinator, several URLs: workers on one transport serve clients on another."""

import os
import subprocess
import sys
import threading

import jobs
from conftest import TRANSPORTS
from minipool import Pool
from minipool.cluster.coordinator import Coordinator
from minipool.cluster.worker import Worker

KEY = b"multibind-key"


def test_workers_on_tcp_serve_clients_on_every_other_transport():
    with Coordinator(KEY) as coord:
        urls = {scheme: coord.serve(f"{scheme}://127.0.0.1:0") for scheme in TRANSPORTS}
        worker = Worker(urls["tcp"], KEY, kind="thread", slots=2, reconnect=False)
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        clients = {scheme: Pool(address=url, authkey=KEY) for scheme, url in urls.items()}
        try:
            futures = {
                scheme: [c.submit(jobs.add, i, b=len(scheme)) for i in range(20)]
                for scheme, c in clients.items()
            }
            for scheme, fs in futures.items():
                assert [f.result(30) for f in fs] == [i + len(scheme) for i in range(20)]
            assert coord.status()["clients"] == len(TRANSPORTS)
            assert sorted(coord.status()["urls"]) == sorted(urls.values())
        finally:
            for c in clients.values():
                c.shutdown()
            worker.stop()
            thread.join(5)


def test_the_cli_binds_several_urls():
    env = {**os.environ, "MINIPOOL_AUTHKEY": KEY.decode(), "PYTHONPATH": os.pathsep.join(sys.path)}
    coordinator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "minipool",
            "coordinator",
            "--bind",
            "tcp://127.0.0.1:0",
            "--bind",
            "ws://127.0.0.1:0",
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = [coordinator.stdout.readline(), coordinator.stdout.readline()]
        tcp_url, ws_url = (line.split()[-1] for line in lines)
        assert tcp_url.startswith("tcp://") and ws_url.startswith("ws://")
        worker = subprocess.Popen([sys.executable, "-m", "minipool", "worker", "--connect", ws_url], env=env)
        try:
            with Pool(address=tcp_url, authkey=KEY) as client:
                client.wait_for_workers(1)
                assert client.submit(jobs.square, 12).result(30) == 144
        finally:
            worker.terminate()
            worker.wait(10)
    finally:
        coordinator.terminate()
        coordinator.wait(10)
