"""The per-frame workloads callgrind counts (agent/bench/perframe.py) run as named."""

from __future__ import annotations

import pytest

from agent.bench.perframe import WORKLOADS, main


@pytest.mark.parametrize("name", ["inbound-8k", "inbound-16k", "outbound"])
def test_each_in_process_workload_runs(name: str) -> None:
    WORKLOADS[name](3)


def test_an_unknown_workload_prints_the_usage_and_fails() -> None:
    assert main(["inbound-32k", "10"]) == 2
    assert main(["inbound-8k", "0"]) == 0
