"""The registry of interventions the roadmap can recommend.

Each intervention has a stable id (the JSON key), the findings that must be present for it to be
proposed at all (no roadmap item without evidence), its parameters (with the ceiling each is
capped at), an integration-risk score 1-5 with reasons, an effort class, and ``apply``: how it
changes a :class:`~inferaudit_analyzer.roi.project.Scenario`. Parameters a user gives on the
command line win over the evidence-derived defaults, but never over a ceiling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inferaudit_analyzer.roi.project import NS_PER_MS, Scenario

EFFORT_WEEKS = {"hours": 0.1, "days": 0.5, "weeks": 2.0, "months": 6.0}
DEFAULT_LAUNCH_IDLE_RATIO = 0.1  # assumed launch-idle share where no kernel trace measured one
MAX_RECOVERABLE_IDLE = 0.9  # never assume a graph removes more than this share of a call
DEFAULT_COPY_TIME_RATIO = 0.05  # assumed copy share of call time where none was measured


@dataclass(frozen=True)
class Knobs:
    """What the user may set (``inferaudit report`` flags); ``None`` = derive from evidence."""

    policy: str = "dynamic"
    max_batch: int = 8
    max_wait_ms: float = 0.0
    cache_hit_share: float | None = None
    routing_split: float | None = None
    small_model_speedup: float | None = None
    quantization_speedup: float | None = None
    graph_speedup: float | None = None
    copy_overlap_ratio: float = 0.7
    slo_p95_ms: float | None = None
    price_per_hour: float | None = None
    call_time_scale: float = 1.0  # x every call and the per-call overhead (host speed what-if)


@dataclass(frozen=True)
class Plan:
    """An applicable intervention with its resolved parameters."""

    id: str
    title: str
    layer: str
    evidence: tuple[str, ...]  # finding ids it rests on
    params: dict[str, Any]
    assumptions: tuple[str, ...]
    risk: int
    risk_reasons: tuple[str, ...]
    effort: str
    apply: Callable[[Scenario], Scenario] = field(repr=False)
    applicable_in_example: bool = False  # the example server can apply it for real

    @property
    def effort_weeks(self) -> float:
        return EFFORT_WEEKS[self.effort]


Findings = dict[str, dict[str, Any]]  # id -> finding JSON (the first of that id)


def _ev(findings: Findings, *ids: str) -> tuple[str, ...]:
    return tuple(i for i in ids if i in findings)


def _num(findings: Findings, fid: str, key: str) -> float | None:
    v = (findings.get(fid) or {}).get("evidence", {}).get(key)
    return float(v) if isinstance(v, int | float) else None


def _batching(f: Findings, k: Knobs, ctx: dict[str, Any]) -> Plan | None:
    ev = _ev(f, "unbatched_serving", "idle_device_while_waiting", "device_idle_host_bound")
    if not ev:
        return None
    mb = max(1, k.max_batch)
    wait_ns = max(0.0, k.max_wait_ms) * NS_PER_MS
    cont = k.policy == "continuous"
    risk = 3 if cont else 2
    reasons = (["needs an iteration-level scheduler (a serving engine such as vLLM/TGI/SGLang) "
                "and a paged KV cache"] if cont else
               ["server change only: gather waiting requests into one padded call"])
    reasons.append(f"batch of {mb} raises memory per call (KV cache x {mb})")
    if not cont:
        reasons.append("padded static batches make short requests wait for the longest one")
    assumptions = [f"policy {k.policy}, max batch {mb}, max wait {k.max_wait_ms:g} ms",
                   "the batched call follows the fitted service-time curve at its batch size"]
    if cont:
        assumptions.append(
            "a decode step with several requests in flight costs what a padded step of that "
            "size costs on this server (rows sit at different positions); an engine whose "
            "attention takes ragged rows without padding would run faster, so this errs low")
    return Plan(
        "continuous_batching",
        ("Continuous (iteration-level) batching" if cont else "Dynamic batching") +
        f" up to {mb}", "runtime", ev,
        {"policy": k.policy, "max_batch": mb, "max_wait_ms": k.max_wait_ms},
        tuple(assumptions), risk, tuple(reasons), "weeks" if cont else "days",
        lambda sc: sc.with_(policy=k.policy, max_batch=mb, max_wait_ns=wait_ns),
        applicable_in_example=not cont)


def _cache(f: Findings, k: Knobs, ctx: dict[str, Any]) -> Plan | None:
    ev = _ev(f, "redundant_compute")
    if not ev:
        return None
    ceiling = _num(f, "redundant_compute", "cacheable_ratio") or 0.0
    computed = ctx.get("computed_ratio", 1.0)
    ceiling_all = ceiling * computed  # share of all requests
    share = ceiling_all if k.cache_hit_share is None else min(k.cache_hit_share, ceiling_all)
    near = (_num(f, "redundant_compute", "near_duplicate_requests") or 0) > 0
    assumptions = [f"cache hit share {share:.3f} of requests (ceiling: measured duplicate share "
                   f"{ceiling_all:.3f})", "a hit is answered without a model call, in ~0 ms"]
    if near:
        assumptions.append("near duplicates hit only with a semantic/prefix cache; their answers "
                           "may differ from a fresh generation")
    return Plan("prompt_cache", "Exact and semantic prompt caching", "runtime", ev,
                {"cache_hit_share": share, "cache_hit_share_ceiling": ceiling_all},
                tuple(assumptions), 3 if near else 2,
                ("stale or personalised answers must not be served from cache",
                 "cached outputs are stored text: privacy review needed") +
                (("semantic matches can return a wrong answer",) if near else ()),
                "days", lambda sc: sc.with_(cache_hit_share=share))


def _routing(f: Findings, k: Knobs, ctx: dict[str, Any]) -> Plan | None:
    ev = _ev(f, "routing_opportunity")
    if not ev:
        return None
    ceiling = _num(f, "routing_opportunity", "short_on_largest_ratio") or 0.0
    split = ceiling if k.routing_split is None else min(k.routing_split, ceiling)
    measured = ctx.get("small_model_speedup")
    speed = k.small_model_speedup or measured or 3.0
    src = ("measured device time per token of the deployed smaller model" if measured and
           not k.small_model_speedup else "given" if k.small_model_speedup else
           "assumed (no smaller model measured): a model ~3x cheaper per token")
    return Plan("model_routing", "Route short requests to a smaller model", "model", ev,
                {"routing_split": split, "routing_split_ceiling": ceiling,
                 "small_model_speedup": speed},
                (f"{split:.3f} of computed requests (the shortest) move to the smaller model "
                 f"(ceiling: short requests on the largest model, {ceiling:.3f})",
                 f"smaller model speed-up x{speed:g}: {src}",
                 "the smaller model shares the replicas; quality on routed traffic is unchanged"),
                4, ("answer quality on routed traffic must be validated",
                    "a second model to deploy, monitor and keep in sync"),
                "weeks", lambda sc: sc.with_(routing_split=split, small_model_speedup=speed))


def _quant(f: Findings, k: Knobs, ctx: dict[str, Any]) -> Plan | None:
    ev = _ev(f, "dram_bound_decode", "kernel_dram_bound_decode", "hot_kernels")
    # a hot GEMM that already computes in 8 bits or fewer is no case for quantising it
    if (f.get("hot_kernels") or {}).get("evidence", {}).get("kernel_low_precision"):
        ev = tuple(i for i in ev if i != "hot_kernels")
    if not ev:
        return None
    speed = min(k.quantization_speedup or 1.5, 2.0)
    src = "given" if k.quantization_speedup else "assumed"
    return Plan("quantization", "Quantise weights / KV cache (e.g. int8 weight-only)", "model",
                ev, {"quantization_speedup": speed, "ceiling": 2.0},
                (f"decode steps x1/{speed:g} ({src}; capped at 2x, the bf16->int8 byte ratio "
                 "of a memory-bound step)", "prefill and per-call overhead unchanged"),
                3, ("accuracy must be re-validated on the task",
                    "kernel support differs per device and runtime"),
                "days", lambda sc: sc.with_(decode_factor=sc.decode_factor / speed))


def _graphs(f: Findings, k: Knobs, ctx: dict[str, Any]) -> Plan | None:
    ev = _ev(f, "kernel_launch_overhead", "short_kernels", "unfused_elementwise_chains")
    if not ev:
        return None
    measured = _num(f, "kernel_launch_overhead", "launch_idle_ratio")
    idle = DEFAULT_LAUNCH_IDLE_RATIO if measured is None else measured
    ceiling = 1.0 / (1.0 - min(max(idle, 0.0), MAX_RECOVERABLE_IDLE))
    speed = ceiling if k.graph_speedup is None else min(max(k.graph_speedup, 1.0), ceiling)
    share = (f"the measured launch-idle share ({idle:.3f})" if measured is not None else
             f"an assumed launch-idle share of {idle:.3f} (no kernel trace measured one)")
    if k.graph_speedup is None:
        how = "is recovered"
    elif k.graph_speedup > speed:
        how = f"is recovered (x{k.graph_speedup:g} given, capped at the ceiling)"
    else:
        how = f"is partly recovered (x{k.graph_speedup:g} given)"
    return Plan("graph_compile", "CUDA graphs / torch.compile (launch overhead, fusion)",
                "runtime", ev, {"graph_speedup": speed, "graph_speedup_ceiling": ceiling,
                                "launch_idle_ratio": idle,
                                "launch_idle_ratio_measured": measured is not None},
                (f"per-call and per-step overhead x1/{speed:.3g}: {share} {how} (ceiling: that "
                 f"share, x{ceiling:.3g})",),
                2, ("graph capture needs static shapes (bucketed batch sizes / lengths)",
                    "compile time at start-up; some ops break graphs"),
                "days", lambda sc: sc.with_(overhead_factor=sc.overhead_factor / speed))


def _copies(f: Findings, k: Knobs, ctx: dict[str, Any]) -> Plan | None:
    ev = _ev(f, "pageable_copies", "hot_path_copies", "pageable_memory_copies",
             "host_device_copies")
    if not ev:
        return None
    measured = ctx.get("copy_time_ratio")
    if not isinstance(measured, int | float):
        measured = _num(f, "hot_path_copies", "copy_time_ratio")
    share = DEFAULT_COPY_TIME_RATIO if measured is None else min(max(float(measured), 0.0), 1.0)
    overlap = min(max(k.copy_overlap_ratio, 0.0), 1.0)
    factor = 1.0 - share * overlap
    what = (f"the measured copy time ({share:.3f} of call time)" if measured is not None else
            f"an assumed copy time of {share:.3f} of call time (none measured)")
    return Plan("pinned_memory", "Pinned host memory and async copies overlapped with compute",
                "runtime", ev, {"copy_time_ratio": share, "overlap_ratio": k.copy_overlap_ratio,
                                "copy_time_ratio_measured": measured is not None},
                (f"{overlap:.0%} of {what} is hidden behind compute (ceiling: all of it)",),
                1, ("pinned memory is a finite host resource; over-pinning hurts the host",),
                "hours", lambda sc: sc.with_(all_factor=sc.all_factor * factor))


def _right_size(f: Findings, k: Knobs, ctx: dict[str, Any]) -> Plan | None:
    """Fewer serving replicas at the SLO, and the paid capacity no model call could use
    released: with ``idle_paid_devices`` beside ``current_replicas`` servers, each replica is
    today priced at (servers + idle) / servers devices; right-sized, at one. On a CPU host whose
    model calls reach only a share of its cores (``cores_unreachable``: the utilisation
    ceiling), a replica on an instance with that share of the cores costs that share
    (``replica_price_ratio`` is the product)."""
    ceiling = _num(f, "cores_unreachable", "utilization_ceiling_ratio")
    cores = ceiling is not None and 0.0 < ceiling < 1.0
    ev = _ev(f, "device_underused", "idle_device_while_waiting")
    if cores:
        ev += ("cores_unreachable",)
    servers = max(1, int(ctx.get("current_replicas", 1)))
    idle = max(0, int(ctx.get("idle_paid_devices") or 0))
    if not ev or (servers <= 1 and idle == 0 and not cores):
        return None
    ratio = servers / (servers + idle)
    assumptions = ["replicas needed = smallest count whose replayed p95 meets the SLO"]
    if idle:
        assumptions.append(
            f"the {idle} paid device(s) on the serving hosts that ran no model call are released "
            f"(each serving replica then costs one device: x{ratio:.3g} today's $/replica-hour); "
            "this needs a smaller instance or host, which the saving assumes is available at "
            "the same $/device-hour")
    risks = ["less headroom for traffic spikes"]
    title = "Right-size: fewer replicas for the same load within the SLO"
    if cores:
        ratio *= ceiling  # type: ignore[operator]
        assumptions.append(
            f"each replica moves to an instance with {ceiling:.0%} of today's cores, the share "
            "its model calls can use (their intra-op threads), at the same $/core-hour; its "
            "model calls run as fast there, and the server's own threads (HTTP, batching, "
            "tokenising) fit beside them")
        risks.append("the server's own threads then share the model call's cores; instance "
                     "sizes come in steps, so the share paid may stay above the share used")
        title = ("Right-size: an instance with the cores the model calls use"
                 if servers <= 1 and idle == 0 else
                 "Right-size: fewer replicas, each on the cores its model calls use")
    return Plan("right_size", title, "hardware", ev,
                {"idle_paid_devices": idle, "replica_price_ratio": ratio,
                 "cores_used_ratio": ceiling if cores else None},
                tuple(assumptions), 1, tuple(risks), "hours",
                lambda sc: sc.with_(replica_price_ratio=ratio))


REGISTRY: tuple[Callable[[Findings, Knobs, dict[str, Any]], Plan | None], ...] = (
    _batching, _cache, _routing, _quant, _graphs, _copies, _right_size)

IDS = ("continuous_batching", "prompt_cache", "model_routing", "quantization", "graph_compile",
       "pinned_memory", "right_size")


def applicable(findings: list[dict[str, Any]], knobs: Knobs, ctx: dict[str, Any]) -> list[Plan]:
    """Every intervention whose evidence is present, with parameters resolved."""
    by_id: Findings = {}
    for fj in findings:
        by_id.setdefault(fj["id"], fj)
    out = []
    for make in REGISTRY:
        plan = make(by_id, knobs, ctx)
        if plan is not None:
            out.append(plan)
    return out
