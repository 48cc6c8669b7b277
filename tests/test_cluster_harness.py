"""``python -m tests.cluster``: up, one line of JSON, down on SIGTERM with nothing left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from tests.processes import ROOT, child_env


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purpose; only its parent has not reaped it yet.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_harness_prints_its_urls_and_stops_everything_on_sigterm(tmp_path: object) -> None:
    env = child_env(GQLWS_EXAMPLE_DB=str(tmp_path) + "/db.sqlite3")
    harness = subprocess.Popen(
        [sys.executable, "-m", "tests.cluster", "--edges", "2", "--workers", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert harness.stdout is not None
        line = harness.stdout.readline()
        described = json.loads(line)
        assert len(described["edges"]) == 2 and described["redis"].startswith("redis://127.0.0.1:")
        for url in described["http"]:
            assert url.startswith("http://127.0.0.1:")
            with urllib.request.urlopen(url, timeout=10) as response:  # GraphiQL
                assert response.status == 200
        pids = described["pids"]
        assert all(_alive(pid) for pid in pids)
        harness.send_signal(signal.SIGTERM)
        assert harness.wait(60) == 0
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids):
            assert time.monotonic() < deadline, "processes left behind"
            time.sleep(0.05)
    finally:
        if harness.poll() is None:
            os.killpg(harness.pid, signal.SIGKILL)
            harness.wait(10)
