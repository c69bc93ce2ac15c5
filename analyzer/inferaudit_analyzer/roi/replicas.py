"""How many replicas the observed load needs within the latency SLO, and which saving is which.

Freed device time is *capacity*: it only lowers the bill when the same load runs on fewer
replicas (or a cheaper device) and still meets the SLO. So every projection is replayed at the
smallest replica count whose p95 meets the SLO (never more than deployed today, unless today's
count misses it, in which case the projection says so). Today's serving is sized the same way;
the replicas it does not need today are right-sizing's saving alone (:func:`credited_replicas`),
so an intervention is priced at today's count less only the replicas *it* frees. Its saving is
labelled:

- ``bill``: fewer replicas carry the load within the SLO, the invoice falls;
- ``capacity``: busy time fell but the same replicas are still needed; the freed time is
  headroom for growth (its value is the busy-floor difference), not money saved today.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from inferaudit_analyzer.roi.project import Replay, Scenario, replay
from inferaudit_analyzer.roi.simulate import ServiceCurve, Workload

MAX_REPLICAS_SEARCHED = 64
# p95s that differ by float rounding alone (the same queue replayed by another policy's code path)
# are equal for the SLO
SLO_FLOAT_TOL = 1e-9


def meets(p95_ns: float, slo_p95_ns: float) -> bool:
    return p95_ns <= slo_p95_ns * (1.0 + SLO_FLOAT_TOL)


@dataclass(frozen=True)
class Sizing:
    replicas: int  # replicas the projection is priced at
    replicas_needed: int | None  # smallest count meeting the SLO (None: not within the search)
    meets_slo: bool
    replay: Replay


def size_for_slo(work: Workload, repeats: np.ndarray, curve: ServiceCurve, sc: Scenario,
                 slo_p95_ns: float, current_replicas: int, seed: int = 0,
                 draws: int = 1) -> Sizing:
    """Smallest replica count in 1..max(current, 64) whose replayed p95 <= the SLO.

    p95 falls monotonically with replicas in practice, so a binary search over the count
    suffices; the replay at the returned count is kept for pricing.
    """
    cache: dict[int, Replay] = {}

    def run(r: int) -> Replay:
        if r not in cache:
            cache[r] = replay(work, repeats, curve, sc.with_(replicas=r), seed, draws)
        return cache[r]

    def ok(r: int) -> bool:
        return meets(run(r).p(0.95), slo_p95_ns)

    hi_limit = max(current_replicas, MAX_REPLICAS_SEARCHED)
    if ok(1):
        needed: int | None = 1
    elif not ok(hi_limit):
        needed = None
    else:
        lo, hi = 1, hi_limit  # ok(hi), not ok(lo)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if ok(mid):
                hi = mid
            else:
                lo = mid
        needed = hi
    if needed is not None and needed <= current_replicas:
        return Sizing(needed, needed, True, run(needed))
    return Sizing(current_replicas, needed, ok(current_replicas), run(current_replicas))


def credited_replicas(current: int, base_sized: int, sized: int, right_sized: bool) -> int:
    """Replicas a projection is priced at: with right-sizing applied, the count it needs at the
    SLO (``sized``); without, today's count less the replicas the projection needs fewer than
    today's serving sized at the SLO (``base_sized``). Never below ``sized``, so it still meets
    the SLO wherever ``sized`` does."""
    if right_sized:
        return sized
    return max(sized, current - max(0, base_sized - sized))


def saving_kind(base_replicas: float, replicas: float, base_bill: float | None,
                bill: float | None, base_busy: float | None, busy: float | None,
                rel_tol: float = 0.01) -> str:
    """``bill`` when fewer paid replicas carry the load and the bill per request falls,
    ``capacity`` when only busy time does, ``none`` otherwise. Replicas are counted in today's
    $/replica-hour (``Replay.paid_replicas``: fewer replicas, or the same ones without the paid
    devices no server used). ``bill`` may be replica-hours per request (what the invoice is
    proportional to, known without a price) and ``busy`` device-seconds: only ratios are
    compared.

    At the same replica count the invoice per hour is the same: a lower cost per request there
    only means the replayed window is shorter (a backlog cleared sooner), which is headroom,
    not money saved today."""
    if replicas < base_replicas * (1 - 1e-9) and base_bill is not None and bill is not None \
            and bill < base_bill * (1 - rel_tol):
        return "bill"
    if base_busy is not None and busy is not None and busy < base_busy * (1 - rel_tol):
        return "capacity"
    return "none"
