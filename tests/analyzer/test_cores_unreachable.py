"""A CPU host whose model calls run on fewer intra-op threads than it has cores pays for CPU
time no load can use: the main job's server (one thread, two cores) read 33 % utilised "of at
most 50 %", and no finding said that half of the bill could never work."""

from __future__ import annotations

import pytest

from inferaudit_analyzer.analyses.idle import _cores_unreachable
from inferaudit_analyzer.analyses.utilization import ResourceUsage, Utilization

S = 1_000_000_000


def _util(*hosts: tuple[str, int | None, int | None, int]) -> Utilization:
    """One resource per (device type, threads, cores, busy s) over a 10 s window."""
    return Utilization(
        window_ns=10 * S, nvml_ratio=None, nvml_samples=0, span_gpu_util_ratio=None,
        memory_util_ratio=None,
        resources=tuple(ResourceUsage(i, kind, 1, busy * S, 100, None, None, cores,
                                      cpu_threads=threads)
                        for i, (kind, threads, cores, busy) in enumerate(hosts)))


def test_one_thread_on_two_cores_leaves_half_the_bill_unreachable() -> None:
    f = _cores_unreachable(_util(("cpu", 1, 2, 3)))
    assert f is not None and f.id == "cores_unreachable" and f.layer == "runtime"
    assert f.severity == "medium"
    ev = f.evidence
    assert (ev["cpu_threads"], ev["cpu_cores"], ev["hosts"]) == (1, 2, 1)
    assert ev["unreachable_cpu_ratio"] == 0.5 and ev["utilization_ceiling_ratio"] == 0.5
    assert ev["device_utilization_ratio"] == pytest.approx(0.3)
    assert ev["utilization_of_reachable_ratio"] == pytest.approx(0.6)
    assert "1 intra-op thread(s) on 2-core host(s): 50%" in f.detail


@pytest.mark.parametrize(("hosts", "severity"), [
    ((("cpu", 6, 8, 3),), "low"),       # a quarter: worth saying
    ((("cpu", 7, 8, 3),), None),        # an eighth: below the house rule
    ((("cpu", 2, 2, 3),), None),        # every core
    ((("cpu", 4, 2, 3),), None),        # more threads than cores: the ceiling is 1
    ((("cpu", None, 2, 3),), None),     # threads not recorded: no ceiling known
    ((("cuda", None, 64, 3),), None),   # a GPU host: its CPU cores are not the device
    ((("cpu", 1, 2, 3), ("cpu", 2, 2, 3)), "low"),  # over both hosts: a quarter
])  # fmt: skip
def test_only_a_share_worth_saying_fires(hosts, severity) -> None:
    f = _cores_unreachable(_util(*hosts))
    assert (None if f is None else f.severity) == severity
