"""The benchmarks run end to end at tiny sizes, and what they count as correctness holds.

``python -m benchmarks.run --quick --mode both`` starts the bare app, the
embedded example and the distributed example (Redis, 2 Daphne edges, 2
Celery workers), loads each from a separate load generator process, and
writes JSON. No timing is asserted here: a shared CI machine makes timings
meaningless; only that every section produced results and that no
notification was lost, duplicated or delivered out of order.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.processes import ROOT, child_env

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server"),
]

SERVERS = ("bare", "embedded", "distributed")


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "run.json"
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--mode", "both", "--out", str(out)],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.exists(), f"no JSON written (exit {done.returncode}):\n{done.stderr[-4000:]}"
    result: dict[str, Any] = json.loads(Path(out).read_text())
    result["exit_code"] = done.returncode
    result["stderr"] = done.stderr
    return result


def test_the_quick_run_measures_the_bare_app_and_both_modes(report: dict[str, Any]) -> None:
    assert report["modes"] == ["embedded", "distributed"]
    assert list(report["results"]) == list(SERVERS)
    assert report["problems"] == [], report["stderr"][-4000:]
    assert report["exit_code"] == 0, report["stderr"][-4000:]


@pytest.mark.parametrize("server", SERVERS)
def test_queries_have_results_at_every_connection_count(
    report: dict[str, Any], server: str
) -> None:
    rows = report["results"][server]["queries"]
    sizes = report["sizes"]
    assert [(row["query"], row["connections"]) for row in rows] == [
        (query, connections)
        for query in sizes["query_kinds"]
        for connections in sizes["connections"]
    ]
    for row in rows:
        assert "error" not in row, row
        assert row["errors"] == 0, row
        assert row["queries"] >= report["sizes"]["queries"]
        assert row["ops_per_s"] > 0 and row["p50_ms"] is not None and row["p99_ms"] is not None


@pytest.mark.parametrize("server", SERVERS)
def test_fanout_loses_duplicates_and_reorders_nothing(report: dict[str, Any], server: str) -> None:
    rows = report["results"][server]["fanout"]
    sizes = report["sizes"]
    assert [(row["subscription"], row["subscribers"]) for row in rows] == [
        (subscription, n) for subscription in sizes["subscriptions"] for n in sizes["subscribers"]
    ]
    assert {row["subscription"] for row in rows} == {"chat", "feed"}  # per subscriber, cohort
    for row in rows:
        assert "error" not in row, row
        assert row["errors"] == 0, row["error_examples"]
        assert set(row["protocols"].values()) == {row["subscribers"] // 2}  # both subprotocols
        for phase in ("back_to_back", "fixed_rate"):
            counts = row[phase]
            assert counts["complete"], counts
            assert (counts["lost"], counts["duplicated"], counts["out_of_order"]) == (0, 0, 0)
            assert counts["delivered"] == counts["expected"]
            assert counts["expected"] == counts["broadcasts"] * row["subscribers"]
            assert counts["notifications_per_s"] > 0 and counts["p99_ms"] is not None


@pytest.mark.parametrize("server", SERVERS)
def test_memory_per_idle_subscribed_connection_is_measured(
    report: dict[str, Any], server: str
) -> None:
    for row in report["results"][server]["fanout"]:
        memory = row["memory"]
        assert memory["edge_pids"] and memory["rss_after_bytes"] > 0
        assert memory["bytes_per_connection"] is not None


def test_the_table_has_a_ratio_column_per_mode(report: dict[str, Any]) -> None:
    header = report["table"].splitlines()[0].split()
    assert header[-2:] == ["embedded/bare", "distributed/bare"]


def test_the_load_generator_measures_with_its_heap_frozen_and_thaws_it_after() -> None:
    """Its sockets' objects stay out of the collector's full passes while a phase is measured."""
    import gc

    from benchmarks.links import frozen_heap

    held = [[index] for index in range(1000)]  # what connecting left behind
    assert gc.get_freeze_count() == 0
    with frozen_heap():
        assert gc.get_freeze_count() >= len(held)
    assert gc.get_freeze_count() == 0
