"""What the ROI model reads from the store: observed requests and measured model calls.

Both come from the analyzer's ``requests`` and ``batches`` views (views.py), so the ROI model sees
the same requests, latencies and device times as the baseline it projects from.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from inferaudit_analyzer.analyses.routing import MODEL_EXPR
from inferaudit_analyzer.roi.fit import CallPoints
from inferaudit_analyzer.roi.simulate import Workload
from inferaudit_analyzer.views import DEVICE_ID_EXPR, ERRORED_SQL

# Model names as the routing analysis spells them (a NULL model is '(unknown)' there too), so
# the routing finding's scope.model picks out the requests routing may move.
REQUESTS_SQL = f"""
SELECT arrival_ns, COALESCE(input_tokens, 0), COALESCE(output_tokens, 1), latency_ns,
       {MODEL_EXPR}, COALESCE(fp_key_id, '') || ':' || COALESCE(prompt_fp, ''),
       prompt_fp IS NOT NULL, COALESCE(cache_hit, FALSE), COALESCE(device_ns, 0), model_ns,
       {ERRORED_SQL}, profiled_apart
FROM requests
WHERE arrival_ns IS NOT NULL AND latency_ns IS NOT NULL
ORDER BY arrival_ns
"""

# Longest member prompt / output per model call, over the requests the views' batch_members gives
# it (links, else the parent; resolved up to the request), the one membership rule of the
# analyzer. The device as the batches view names it: its hw.id (a GPU's UUID, which the view
# gives a call of the process and index that recorded none) where known, else the device id the
# span recorded (NULL where it recorded neither: the view's default '0' would make every worker
# that records none one server; serving_devices counts those from their calls in flight). A CPU
# call is on no device (NULL): the host's cores are not one more server beside its GPU. Keyed
# with the resource (a worker process and the device it ran on).
CALLS_SQL = f"""
SELECT b.start_ns, b.duration_ns, b.device_ns,
       COALESCE(b.batch_size, NULLIF(b.members, 0), 1) AS bs,
       MAX(r.in_tok) AS in_max, MAX(r.out_tok) AS out_max,
       b.padded_tokens, b.input_tokens, b.output_tokens, COALESCE(b.request_model, ''),
       MIN(r.start_ns) AS first_member_ns, b.end_ns, b.resource_id,
       ANY_VALUE(CASE WHEN b.device_type = 'cpu' THEN NULL
                      ELSE COALESCE(b.hw_id, {DEVICE_ID_EXPR}) END) AS device_id,
       MIN(r.in_tok) AS in_min, b.profiled_apart
FROM batches b
LEFT JOIN batch_members m ON m.batch_trace_id = b.trace_id AND m.batch_span_id = b.span_id
LEFT JOIN request_spans r ON r.trace_id = m.req_trace_id AND r.span_id = m.req_span_id
GROUP BY b.trace_id, b.span_id, b.start_ns, b.duration_ns, b.device_ns, b.batch_size, b.members,
         b.padded_tokens, b.input_tokens, b.output_tokens, b.request_model, b.end_ns,
         b.resource_id, b.device_id, b.hw_id, b.profiled_apart
ORDER BY b.start_ns
"""


@dataclass(frozen=True)
class Observed:
    """Requests (arrival order) and model calls, as numpy arrays; ns and token counts."""

    arrival_ns: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    latency_ns: np.ndarray
    model: np.ndarray  # object array of model names
    prompt_key: np.ndarray  # object array "key:fingerprint" ('' fingerprint: none)
    fingerprinted: np.ndarray  # bool
    cache_hit: np.ndarray  # bool: served from a cache already
    device_ns: np.ndarray
    calls: CallPoints
    call_device_ns: np.ndarray
    call_start_ns: np.ndarray
    call_model: np.ndarray
    call_gap_ns: float = 0.0  # median worker time between back-to-back calls (see call_gap)
    call_gap_samples: int = 0
    calls_from_requests: bool = False  # no batch spans: each request stood in as its own call
    serving_devices: int = 1  # servers that ran model calls at the same time (serving_devices)
    # resource id -> devices it served from (its _held figure); empty without batch spans
    serving_by_resource: dict[Any, int] = field(default_factory=dict)
    errored: np.ndarray | None = None  # bool: the request failed (views.ERRORED_SQL)
    # bool: a profiled model call served the request (its latency pays the profiler) and is
    # kept apart (views.PROFILED_APART_SQL: not where every call was profiled)
    profiled: np.ndarray | None = None

    def out_of_percentiles(self) -> np.ndarray | None:
        """Per request, True where its latency is left out of every percentile (failed, or
        served by a profiled call: views.LATENCY_SAMPLE_SQL, as the baseline's); None: none."""
        masks = [m.astype(bool) for m in (self.errored, self.profiled) if m is not None]
        if not masks:
            return None
        out = np.logical_or.reduce(masks)
        return out if out.any() else None

    def overlap_share(self) -> float:
        """Share of requests that arrive while an earlier one is still being served."""
        if self.n < 2:
            return 0.0
        order = np.argsort(self.arrival_ns, kind="stable")
        start = self.arrival_ns[order]
        end = start + self.latency_ns[order]
        running_end = np.maximum.accumulate(end)
        return float(np.mean(start[1:] < running_end[:-1]))

    def workload(self, mask: np.ndarray | None = None) -> Workload:
        m = np.ones(self.arrival_ns.size, dtype=bool) if mask is None else mask
        return Workload.of(self.arrival_ns[m], self.input_tokens[m], self.output_tokens[m])

    @property
    def n(self) -> int:
        return int(self.arrival_ns.size)

    def exact_repeats(self) -> np.ndarray:
        """True for a computed request whose keyed fingerprint was seen earlier (a cache would
        have answered it)."""
        seen: set[str] = set()
        out = np.zeros(self.n, dtype=bool)
        for i in range(self.n):
            if not self.fingerprinted[i] or self.cache_hit[i]:
                continue
            k = self.prompt_key[i]
            out[i] = k in seen
            seen.add(k)
        return out


def call_gap(cl: list[tuple]) -> tuple[float, int]:
    """Median time a device's worker spends between two calls when work was already waiting.

    A server does more per call than the model call its batch span covers (scheduling, setting
    results, the next request's bookkeeping). When the next call's first member had arrived
    before the previous call ended, the gap between them is that overhead; the replay adds it
    to every call. Returns (median ns, samples).
    """
    by_dev: dict[tuple, list[tuple]] = {}
    for r in cl:
        if r[10] is not None and r[11] is not None:
            by_dev.setdefault((r[12], r[13]), []).append(r)
    gaps = []
    for rows in by_dev.values():
        rows.sort(key=lambda r: r[0])
        for prev, nxt in itertools.pairwise(rows):
            gap = nxt[0] - prev[11]
            if nxt[10] <= prev[11] and gap >= 0:
                gaps.append(gap)
    return (float(np.median(gaps)) if gaps else 0.0), len(gaps)


# Servers in service for at most this share of the time any is are not counted: a rolling
# restart's overlap (the new process's first call while the old one's last still runs), clock
# jitter between back-to-back calls. A time-weighted quantile, not the instantaneous maximum.
MIN_SERVING_SHARE = 0.05


def _served_level(intervals: list[tuple[float, float, int]]) -> int:
    """The largest count k of servers such that at least k were in service (intervals
    ``[start, end)`` weighted by the servers each holds) for ``MIN_SERVING_SHARE`` of the time
    at least one was: the time-weighted 95th percentile of the count while serving."""
    ev = sorted([(a, 1, w) for a, b, w in intervals if b > a]
                + [(b, 0, -w) for a, b, w in intervals if b > a])  # ends first at equal times
    at: dict[int, float] = {}
    cur, prev = 0, None
    for t, _, d in ev:
        if prev is not None and cur > 0 and t > prev:
            at[cur] = at.get(cur, 0.0) + (t - prev)
        cur, prev = cur + d, t
    serving = sum(at.values())
    if serving <= 0:
        return max((w for _, _, w in intervals), default=1)
    best = 1
    for k in sorted(at):
        if sum(v for c, v in at.items() if c >= k) >= MIN_SERVING_SHARE * serving:
            best = k
    return best


def _held(cl: list[tuple]) -> dict[Any, tuple[float, float, int, int]]:
    """Per resource (rows of CALLS_SQL): its first call's start, its last call's end, the
    servers it held and the devices it used. Servers: the calls it had in flight at once for a
    meaningful share of its serving time (:func:`_served_level`), and at least the devices it
    ran calls on where it records them (worker threads side by side on one GPU are several
    servers; one device id must not serialise them). Devices: the ids it recorded, else the
    servers."""
    by_res: dict[Any, list[tuple]] = {}
    for r in cl:
        if r[0] is not None and r[11] is not None:
            by_res.setdefault(r[12], []).append(r)
    out = {}
    for res, rows in by_res.items():
        devices = {r[13] for r in rows if r[13] is not None}
        in_flight = _served_level([(float(r[0]), float(r[11]), 1) for r in rows])
        held = max(len(devices), in_flight)
        out[res] = (min(float(r[0]) for r in rows), max(float(r[11]) for r in rows), held,
                    len(devices) or held)
    return out


def _servers(held: dict[Any, tuple[float, float, int, int]]) -> int:
    """Servers in service side by side (:func:`serving_devices`), from :func:`_held`."""
    spans = [(start, end, n) for start, end, n, _ in held.values()]
    return max(1, _served_level(spans)) if spans else 1


def serving_devices(cl: list[tuple]) -> int:
    """How many servers ran model calls side by side (rows of CALLS_SQL). A process (resource)
    holds as many servers as its calls in flight at once, and at least as many as the devices
    it ran calls on, from its first call's start to its last call's end (so a restarted process
    is not a second server). The count is what was in
    service for a meaningful share of the serving time (:func:`_served_level`), so a brief
    overlap (a rolling restart, back-to-back calls a microsecond apart) is not a whole extra
    replica for the whole window. The replay runs this many servers; paid devices that ran no
    call (a 4-GPU host with one worker) are priced, not replayed."""
    return _servers(_held(cl))


def idle_starts(cl: list[tuple]) -> np.ndarray:
    """Per call (rows of CALLS_SQL, in order): True when its first member arrived after the
    previous call on the same device had ended (the server sat idle; fit.idle_start_factor).
    A device's first call counts as idle; a call without member times as not idle."""
    out = np.zeros(len(cl), dtype=bool)
    by_dev: dict[tuple, list[int]] = {}
    for k, r in enumerate(cl):
        by_dev.setdefault((r[12], r[13]), []).append(k)
    for ks in by_dev.values():
        ks.sort(key=lambda k: cl[k][0])
        prev_end = None
        for k in ks:
            first, end = cl[k][10], cl[k][11]
            if first is not None:
                out[k] = prev_end is None or first >= prev_end
            if end is not None:
                prev_end = end if prev_end is None else max(prev_end, end)
    return out


def ragged_calls(cl: list[tuple]) -> np.ndarray:
    """Per call (rows of CALLS_SQL): True when its rows had unequal lengths, so it ran padded:
    from its members' prompt lengths, else from the padded vs real input tokens the batch span
    recorded, else (a batch of several, lengths unknown) assumed padded."""
    out = np.zeros(len(cl), dtype=bool)
    for k, r in enumerate(cl):
        if r[3] is None or r[3] < 2:
            continue
        if r[4] is not None and r[14] is not None:
            out[k] = r[14] < r[4]
        elif r[6] is not None and r[7] is not None:
            out[k] = r[6] > r[7]
        else:
            out[k] = True
    return out


def observe(con: Any) -> Observed:
    """Read requests and calls from a connection where the views exist (views.create_views)."""
    rq = con.execute(REQUESTS_SQL).fetchall()
    cl = con.execute(CALLS_SQL).fetchall()
    def col(rows: list[tuple], i: int, dtype: Any = np.float64) -> np.ndarray:
        return np.asarray([r[i] for r in rows], dtype=dtype)

    batch = col(cl, 3)
    in_max = np.asarray([
        r[4] if r[4] is not None else
        (r[6] / max(r[3], 1) if r[6] is not None else
         (r[7] / max(r[3], 1) if r[7] is not None else np.nan)) for r in cl], dtype=np.float64)
    out_max = np.asarray([
        r[5] if r[5] is not None else
        (r[8] / max(r[3], 1) if r[8] is not None else np.nan) for r in cl], dtype=np.float64)
    gap_ns, gap_n = call_gap(cl)
    idle: np.ndarray | None = idle_starts(cl) if cl else None
    ragged: np.ndarray | None = ragged_calls(cl) if cl else None
    from_requests = not cl and bool(rq)
    # without batch spans the overlap check (model.MAX_UNTRACED_OVERLAP_SHARE) leaves one server
    held = _held(cl)  # once: both figures come from it
    servers = _servers(held)
    # devices each resource served from: set against those it paid for, the ones no server used
    by_res = {res: used for res, (_, _, _, used) in held.items()}
    if from_requests:
        # No batch spans (foreign GenAI spans, e.g. vLLM's): each request's own model time is
        # one call of batch size 1, the best the spans say.
        cl = [(r[0], r[9], r[9], 1, r[1], r[2], None, None, None, r[4]) for r in rq
              if r[9] is not None and r[9] > 0]
        batch = col(cl, 3)
        in_max, out_max = col(cl, 4), np.maximum(col(cl, 5), 1.0)
        ragged = None
    dur = col(cl, 1)
    dev = np.asarray([r[2] if r[2] is not None else r[1] for r in cl], dtype=np.float64)
    # A profiled call's span holds the profiler's start, export and compression: no point of
    # the service-time curve (CallPoints.of drops a NaN duration), unless every call was one.
    profiled_call = np.asarray([not from_requests and bool(r[15]) for r in cl], dtype=bool)
    fit_dur = np.where(profiled_call, np.nan, dur)
    calls = CallPoints.of(batch, in_max, out_max, fit_dur, idle, ragged)
    ok = (np.isfinite(batch) & np.isfinite(in_max) & np.isfinite(out_max) & np.isfinite(dur)
          & (batch >= 1) & (dur > 0)) if cl else np.zeros(0, dtype=bool)
    return Observed(
        arrival_ns=col(rq, 0), input_tokens=col(rq, 1), output_tokens=np.maximum(col(rq, 2), 1),
        latency_ns=col(rq, 3), model=col(rq, 4, object), prompt_key=col(rq, 5, object),
        fingerprinted=col(rq, 6, bool), cache_hit=col(rq, 7, bool), device_ns=col(rq, 8),
        calls=calls, call_device_ns=dev[ok] if cl else np.zeros(0),
        call_start_ns=col(cl, 0)[ok] if cl else np.zeros(0),
        call_model=col(cl, 9, object)[ok] if cl else np.zeros(0, dtype=object),
        call_gap_ns=gap_ns, call_gap_samples=gap_n, calls_from_requests=from_requests,
        serving_devices=servers, serving_by_resource=by_res, errored=col(rq, 10, bool),
        profiled=col(rq, 11, bool),
    )
