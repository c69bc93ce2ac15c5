"""Entry of the calibrated ROI model: store + analyzer report in, the report's ``roi`` section out.

Reads the observed requests and calls (``data.observe``), fits the service curve (a calibration
file wins, anchored to the spans), builds the baseline scenario as deployed (sequential when every
call had one request, else dynamic batching at the largest batch seen; replicas = the servers that
ran model calls side by side, ``data.serving_devices``; the paid devices only set the price of
one: the resources' $/h over the serving replicas), then hands over to
:func:`~inferaudit_analyzer.roi.roadmap.build_roadmap`. Requests the server's own cache answered
stay in the workload, marked with their measured latency; failed requests are marked too, and
left out of every latency percentile (``project.observed_marks``).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from inferaudit_analyzer.analyses.utilization import RESOURCE_HOST_SQL
from inferaudit_analyzer.roi.data import Observed, observe
from inferaudit_analyzer.roi.fit import calibration_points, fit_curve, match_device
from inferaudit_analyzer.roi.interventions import Knobs
from inferaudit_analyzer.roi.project import (
    Prices,
    Scenario,
    latency_quantile,
    observed_marks,
)
from inferaudit_analyzer.roi.roadmap import RoiInputs, build_roadmap

# Without batch spans each request is taken as its own model call, which is only right for a
# server that runs one request at a time. Past this share of overlapping requests it batches.
MAX_UNTRACED_OVERLAP_SHARE = 0.05


class CalibrationError(ValueError):
    """A calibration file cannot be used; the message names the file and the problem."""


def load_calibration(path: str | Path) -> dict[str, Any]:
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot read calibration ({exc.strerror or exc})") from exc
    except json.JSONDecodeError as exc:
        raise CalibrationError(f"{path}: line {exc.lineno} column {exc.colno}: {exc.msg}") from exc
    except UnicodeDecodeError as exc:
        raise CalibrationError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    if not isinstance(doc, dict):
        raise CalibrationError(f"{path}: expected a JSON object with 'points'")
    try:
        pts = calibration_points(doc)
    except (ValueError, OverflowError) as exc:
        raise CalibrationError(f"{path}: {exc}") from exc
    n = len(doc["points"])
    if not len(pts):
        raise CalibrationError(f"{path}: none of its {n} points is usable (each needs a batch "
                               "size >= 1, finite token counts and a duration > 0)")
    if len(pts) < n:
        doc["unusable_points"] = n - len(pts)  # the report says so beside the file's name
    return doc


def _device_row(report: dict[str, Any]) -> dict[str, Any] | None:
    detail = (report.get("baseline", {}).get("overall", {})
              .get("device_utilization_detail") or {})
    for r in detail.get("by_resource") or []:
        row = match_device(r.get("gpu_model")) or (
            match_device("cpu") if r.get("device_type") == "cpu" else None)
        if row:
            return row
    return match_device("cpu")


def _small_model_speedup(report: dict[str, Any]) -> float | None:
    """Device time per token of the largest model over the cheapest other one, if measured.
    A by_model row without requests (``requests_observed`` false) has no tokens and no request
    device time, so it is left out by the same test as an unmeasured model."""
    per_tok = []
    for m in (report.get("baseline", {}).get("by_model") or {}).values():
        toks = (m.get("input_tokens") or 0) + (m.get("output_tokens") or 0)
        if m.get("device_s") and toks:
            per_tok.append(m["device_s"] / toks)
    if len(per_tok) < 2 or min(per_tok) <= 0:
        return None
    return max(per_tok) / min(per_tok)


def _host_of(con: Any) -> dict[str, str]:
    """Resource id -> host key (``utilization.HOST_KEY_SQL``): processes on one machine share
    its devices and its ``by_resource`` row, keyed by the host's lowest resource id."""
    return {str(rid): str(key) for rid, key in con.execute(RESOURCE_HOST_SQL).fetchall()}


def _idle_paid_devices(detail: dict[str, Any], serving: dict[Any, int],
                       host_of: dict[str, str]) -> int:
    """Paid devices on the hosts that ran model calls beyond the servers all their processes
    held together (one worker on a 4-GPU host: 3; two workers on a 2-GPU host, one GPU each:
    0), the devices right-sizing can release. Hosts that ran no call are left out: the spans
    cannot tell an idle GPU host from a front end's CPU."""
    def host(rid: Any) -> str:
        return host_of.get(str(rid), f"resource:{rid}")

    held: dict[str, int] = {}
    for rid, n in serving.items():
        held[host(rid)] = held.get(host(rid), 0) + int(n)
    idle = 0
    for r in detail.get("by_resource") or []:
        n = held.get(host(r.get("resource_id")))
        if n is not None and isinstance(r.get("devices"), int | float):
            idle += max(0, int(r["devices"]) - n)
    return idle


def _largest_model(findings: list[dict[str, Any]]) -> str | None:
    """The model the routing finding calls the largest (routing moves only its requests)."""
    for f in findings:
        if f.get("id") == "routing_opportunity":
            m = ((f.get("scope") or {}).get("model")
                 or (f.get("evidence") or {}).get("largest_model"))
            return None if m is None else str(m)
    return None


def roi_section(con: Any, report: dict[str, Any], knobs: Knobs, *,
                calibration: dict[str, Any] | None = None, bootstrap: int = 100,
                seed: int = 0) -> dict[str, Any]:
    """The ``roi`` dict (docs/roi-model.md); ``{"error": ...}`` when nothing can be projected."""
    obs: Observed = observe(con)
    if obs.n == 0:
        return {"error": "no request with an arrival and a latency: nothing to project"}
    if obs.calls_from_requests and obs.overlap_share() > MAX_UNTRACED_OVERLAP_SHARE:
        return {"error": (
            f"{obs.overlap_share():.0%} of requests overlap in time but no model-call (batch) "
            "spans were exported: the server runs them together in a way the spans do not "
            "show, so its service curve cannot be fitted. Trace the model calls "
            "(instrument_model or ia.batch) to get projections.")}
    overall = report.get("baseline", {}).get("overall", {})
    device = _device_row(report)
    cal_pts = calibration_points(calibration) if calibration is not None else None
    # A host-speed what-if scales what was measured, so the fit, its anchor and every
    # bootstrap refit see calls that took that much longer (shapes and ratios unchanged).
    scale = float(knobs.call_time_scale)
    calls = obs.calls.time_scaled(scale)
    cal_pts = None if cal_pts is None else cal_pts.time_scaled(scale)
    bs = obs.calls.batch
    max_seen = int(bs.max()) if bs.size else 1
    idle_factor = None if calibration is None else calibration.get("idle_start_factor")
    try:
        fit = fit_curve(calls, calibration=cal_pts, max_batch=max(knobs.max_batch, max_seen),
                        device=device, idle_factor=idle_factor)
    except ValueError as exc:
        return {"error": str(exc)}
    if scale != 1.0:
        fit = replace(fit, assumptions=(
            *fit.assumptions, f"every model call and the server's per-call overhead take "
            f"x{scale:g} the audited time (--call-time-scale)"))
    detail = overall.get("device_utilization_detail") or {}
    paid = int(detail.get("devices") or 1)
    replicas = obs.serving_devices
    base = (Scenario("sequential", 1, replicas=replicas) if max_seen <= 1 else
            Scenario("dynamic", max_seen, replicas=replicas))
    per_hour = report.get("price", {}).get("usd_per_hour")
    if knobs.price_per_hour is not None:
        # per device-hour, as cost.py reads --price-per-hour: every paid device, over the
        # replicas that serve (one GPU running 3 calls at once: a third of its $/h each)
        per_replica = knobs.price_per_hour * max(paid, 1) / max(replicas, 1)
    else:
        # the whole invoice over the replicas that serve: paid devices that ran no call are
        # part of what one serving replica costs (a 4-GPU host with one worker: 4 GPUs' $/h)
        per_replica = None if per_hour is None else float(per_hour) / max(replicas, 1)
    busy = overall.get("busy_cost_per_request_usd")
    prices = Prices(per_replica, None if busy is None else busy * scale, 0.0)
    computed = 1.0 - float(np.mean(obs.cache_hit)) if obs.n else 1.0
    ctx = {"computed_ratio": computed, "current_replicas": replicas, "paid_devices": paid,
           "idle_paid_devices": _idle_paid_devices(detail, obs.serving_by_resource,
                                                   _host_of(con)),
           "small_model_speedup": _small_model_speedup(report),
           "copy_time_ratio": (report.get("copies") or {}).get("copy_time_ratio"),
           "overhead_samples": obs.call_gap_samples}
    # The measured p95 is the audited host's: at another speed there is none to keep or to
    # check the replay against, so the SLO falls back to the replayed baseline. It is taken
    # over the requests the replay's percentiles are (project.percentile_latencies: the
    # successful ones, cache hits included; failures and profiled calls' requests apart, as the
    # report's baseline p95).
    measured_p95 = (latency_quantile(obs.latency_ns, obs.out_of_percentiles(), 0.95) / 1e6
                    if scale == 1.0 else None)
    findings = report.get("findings", [])
    inp = RoiInputs(calls, cal_pts, obs.workload(), observed_marks(obs, _largest_model(findings)),
                    measured_p95, base,
                    prices, device, ctx, obs.call_gap_ns * scale, idle_factor)
    out = build_roadmap(inp, findings, knobs, fit, bootstrap=bootstrap,
                        seed=seed)
    out["device_prior"] = device
    out["calibration"] = None if calibration is None else {
        k: calibration.get(k) for k in ("model", "device", "created_at", "torch_threads")}
    return out
