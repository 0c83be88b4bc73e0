"""The cluster part of ``seatlock bench`` (loadtests/clusterbench.py), run with a tiny duration:
it starts its own Redis and clusters, and reports every row with figures in it."""

from __future__ import annotations

import pytest

from loadtests.bench import Config
from loadtests.clusterbench import COST_TARGET, cluster_part


@pytest.mark.timeout(120)
async def test_the_cluster_part_reports_its_rows() -> None:
    config = Config(duration=1.0, turns=1, generators=1, connections=4)
    rows, notes = await cluster_part(config)
    by_name = {row.name: row for row in rows}
    holds = [row for name, row in by_name.items() if name.startswith("Cluster part, engine holds")]
    assert [row.name.split(": ", 1)[1] for row in holds] == [
        "one Redis, fast transport",
        "one Redis, redis-py transport",
        "3-primary cluster, fast transport",
        "3-primary cluster, redis-py transport",
        "3 primaries + 3 replicas, SEATLOCK_HOLD_REPLICAS=0",
        "3 primaries + 3 replicas, SEATLOCK_HOLD_REPLICAS=1",
    ]
    for row in holds:
        assert not row.value.startswith("0 "), row
        assert row.p99.endswith(" ms"), row
    verdict = by_name["Cluster cost per hold / single-node cost per hold (Redis CPU)"]
    assert float(verdict.ratio) > 0 and verdict.target == COST_TARGET, verdict
    per_node = next(row for name, row in by_name.items() if name.endswith("cluster, each primary"))
    assert per_node.value.count(" us (") == 3, per_node  # one figure per primary
    assert float(by_name["Cluster holds: SEATLOCK_HOLD_REPLICAS=1 / =0"].ratio) > 0
    assert any("SEATLOCK_HOLD_REPLICAS=1" in note and "503" in note for note in notes), notes
