"""Idle device while requests wait, and a device paid for but mostly unused.

``idle_device_while_waiting``: per device, of the time at least one of its requests (those
whose model calls ran on it) was in flight, the share during which it ran no model call, summed
over devices (the concurrency module's per-device sweep; the fleet's sweep where no call links to
a request). A replica idle while its own requests wait counts as idle though another replica is
busy; a request no model call served is on no device, and not counted. Time a request spends in
tokenising, Python pre/post-processing, I/O or a sequential pipeline with its device idle is the
serving stack's (runtime layer).
``device_underused``: busy / paid device time below DCGM's 0.5 guidance with nobody waiting:
capacity exceeds demand (the bill's idle share; the fix is fewer or smaller devices, or more load
per device). Nobody waiting means both: the device is not idle while requests are in flight, and
requests do not queue for it (p95 queue time below one median model call). A server that runs one
request at a time on one of several cores queues requests at low utilisation: that is
serialisation (``unbatched_serving``), and consolidating replicas would make it worse. Where the
request and device clocks disagree (``Concurrency.clock_skews``) the idle share is not measured
(None): the first finding cannot fire, and the second reads it as without batch spans.
``cores_unreachable``: on a CPU host (the device is its cores) the model calls ran on fewer
intra-op threads than the host has cores, so a share of the paid CPU time can never be busy,
whatever the load (the utilisation's ceiling below 1): a serving configuration (thread count,
workers per host) or an instance larger than the server uses.
"""

from __future__ import annotations

from inferaudit_analyzer import thresholds as th
from inferaudit_analyzer.analyses.concurrency import Concurrency
from inferaudit_analyzer.analyses.utilization import Utilization
from inferaudit_analyzer.findings import Finding


def queue_pressure_ratio(util: Utilization) -> float | None:
    """p95 queue time / p50 model-call time; None when either was not measured."""
    if util.queue_p95_ns is None or not util.service_p50_ns:
        return None
    return util.queue_p95_ns / util.service_p50_ns


def idle_findings(conc: Concurrency, util: Utilization) -> list[Finding]:
    out: list[Finding] = []
    idle_ratio = conc.idle_while_waiting_ratio
    waiting = idle_ratio is not None and idle_ratio >= th.IDLE_WHILE_WAITING_RATIO
    if waiting:
        idle_ns, inflight_ns = conc.idle_waiting_basis
        out.append(Finding(
            id="idle_device_while_waiting",
            title="The device sits idle while requests wait",
            severity="high" if idle_ratio >= th.IDLE_WHILE_WAITING_HIGH_RATIO else "medium",
            layer="runtime",
            evidence={
                "idle_while_waiting_ratio": round(idle_ratio, 4),
                # summed over the devices swept (0: the fleet's, no call links to a request)
                "idle_while_waiting_s": idle_ns / 1e9,
                "requests_inflight_s": inflight_ns / 1e9,
                "devices_swept": conc.swept_devices,
                "device_utilization_ratio": (None if util.ratio is None
                                             else round(util.ratio, 4)),
                "threshold_ratio": th.IDLE_WHILE_WAITING_RATIO,
            },
            detail=("Share of the time a device's requests were in flight during which it ran "
                    "no model call (summed over devices: a replica idle while its own requests "
                    "wait is idle, whatever the others do). That time goes to the serving stack "
                    "(tokenising, pre/post-processing, I/O, a sequential pipeline); overlap it "
                    "with device work or batch it."),
        ))
    ratio = util.ratio
    queued = queue_pressure_ratio(util)
    queueing = queued is not None and queued >= th.QUEUED_P95_OVER_SERVICE_RATIO
    if ratio is not None and ratio < th.UNDERUSED_UTILIZATION_RATIO and not waiting \
            and not queueing and util.resources:
        out.append(Finding(
            id="device_underused",
            title="Paid device time is mostly unused",
            severity="medium" if ratio < th.UNDERUSED_UTILIZATION_RATIO / 2 else "low",
            layer="runtime",
            evidence={
                "device_utilization_ratio": round(ratio, 4),
                "devices": util.devices,
                "busy_device_s": util.busy_ns / 1e9,
                "paid_device_s": util.window_ns * util.devices / 1e9,
                "threshold_ratio": th.UNDERUSED_UTILIZATION_RATIO,
                "queue_p95_over_service_p50_ratio": (None if queued is None
                                                     else round(queued, 4)),
                "threshold_queue_ratio": th.QUEUED_P95_OVER_SERVICE_RATIO,
            },
            detail=("Busy / paid device time below DCGM's 0.5 'ineffective use' guidance while "
                    "requests neither queue for the device nor wait with it idle: capacity "
                    "exceeds demand. "
                    "Consolidate replicas or right-size the device."),
        ))
    unreachable = _cores_unreachable(util)
    if unreachable is not None:
        out.append(unreachable)
    return out


def _cores_unreachable(util: Utilization) -> Finding | None:
    """CPU hosts whose model calls use fewer threads than cores (see the module docstring)."""
    if util.source != "spans":
        return None
    # Over every CPU host whose ceiling is known (those that reach all their cores count too:
    # the share is of the CPU time paid for), named by the ones that do not.
    cpus = [r for r in util.resources if r.busy_known and r.ceiling_ratio is not None]
    hosts = [r for r in cpus if r.ceiling_ratio < 1.0]  # type: ignore[operator]
    if not hosts:
        return None
    devices = sum(r.devices for r in cpus)
    ceiling = sum(r.ceiling_ratio * r.devices for r in cpus) / devices  # type: ignore[operator]
    lost = 1.0 - ceiling
    if lost < th.UNREACHABLE_CORES_RATIO:
        return None
    busy = sum(r.busy_ns for r in cpus) / (util.window_ns * devices) if util.window_ns else None
    threads = sorted({r.cpu_threads for r in hosts})
    cores = sorted({r.cpu_cores for r in hosts})
    return Finding(
        id="cores_unreachable",
        title="The model calls cannot use all the cores the host is paid for",
        severity="medium" if lost >= th.UNREACHABLE_CORES_MEDIUM_RATIO else "low",
        layer="runtime",
        evidence={
            "cpu_threads": threads[0] if len(threads) == 1 else threads,
            "cpu_cores": cores[0] if len(cores) == 1 else cores,
            "hosts": len(hosts),
            "utilization_ceiling_ratio": round(ceiling, 4),
            "unreachable_cpu_ratio": round(lost, 4),
            "device_utilization_ratio": None if busy is None else round(busy, 4),
            "utilization_of_reachable_ratio": (None if busy is None or ceiling <= 0
                                               else round(busy / ceiling, 4)),
            "threshold_unreachable_ratio": th.UNREACHABLE_CORES_RATIO,
        },
        detail=(f"The model calls ran on {_listed(threads)} intra-op thread(s) on "
                f"{_listed(cores)}-core host(s): {lost:.0%} of the paid CPU time can never be "
                "busy, however much load arrives. Give the model calls the host's cores (torch "
                "intra-op threads), run one worker per free core, or serve from a smaller "
                "instance."),
    )


def _listed(values: list[int | None]) -> str:
    return "/".join(str(v) for v in values)
