"""The fan-out micro-benchmark runs and reports a cost per frame for each batch size."""

from __future__ import annotations

from loadtests import fanoutcost


async def test_the_fanout_cost_is_measured_on_real_sockets() -> None:
    costs = await fanoutcost.measure(watchers=20, rounds=2)
    assert set(costs) == {1, 5} and all(us > 0 for us in costs.values())
