"""Device utilisation: the share of paid device time that did work.

Resources with one ``host.name`` are one machine. Per device (machine, and the GPU's ``hw.id``
where the span has one, else the device id: ``views.device_key_sql``) the busy time
is the union of its model-call intervals (SQL: sort by start, running max of ends, a new island
whenever a start passes the running max), capped by the measured device time when the SDK
measured it. On a CPU device the device is the host's
cores: busy = process CPU time / cores. Utilisation = busy / (window x devices), the devices being
``gpu_count`` of the machine (or the distinct devices seen, whichever is larger), or one CPU
instance.
NVML's ``hw.gpu.utilization`` (when sampled) is reported beside it, not mixed in.

Every narrower scope (a model, a time bucket) is measured on the same basis: a batch's share of
its device's busy time is its share of the quantity that busy time was computed from (CPU time on
a CPU host with a core count, else its device time), spread evenly over the batch's wall interval
for time buckets; the paid capacity is the same devices over that scope's time. A model is the one
the requests asked for: a batch's share goes to the requests it served by token share. A batch no
request links to is attributed by one rule (BATCH_SHARES_SQL, which cost reads too): to the
requested model of its name, else as the linked calls of its model name served, else, on a host
with no link information at all, to the host's requests (all requests, where nothing in the input
is linked); else it keeps its own model name (a model only such batches carry has a by-model row of
its own, without requests). So the models of one device add up to the overall figure, and so do
the buckets weighted by their length.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from inferaudit_analyzer import thresholds as th
from inferaudit_analyzer.analyses._common import ratio, rounded
from inferaudit_analyzer.findings import Finding
from inferaudit_analyzer.views import device_key_sql
from inferaudit_sdk import semconv

# Processes on one machine (several resources with the same host.name) share its devices and
# its bill: they are grouped by host, falling back to the resource when no host name is known.
# A process without a host name is a host of its own, keyed by this prefix and its resource id.
RESOURCE_HOST_PREFIX = "resource:"


def host_key_sql(resource_col: str) -> str:
    """The host key of a row joined to ``resources r`` (LEFT JOIN: ``resource_col`` is the row's
    own resource id, so a row whose resource is unknown still keys by it)."""
    return f"COALESCE(r.host_name, '{RESOURCE_HOST_PREFIX}' || CAST({resource_col} AS VARCHAR))"


HOST_KEY_SQL = host_key_sql("r.resource_id")
# Every resource with its host key.
RESOURCE_HOST_SQL = f"SELECT r.resource_id, {HOST_KEY_SQL} FROM resources r"

HOSTS_SQL = f"""
SELECT {HOST_KEY_SQL} AS host_key, MIN(r.resource_id) AS resource_id,
       MAX(r.gpu_count) AS gpu_count, MAX(r.cpu_cores) AS cpu_cores,
       MAX(r.gpu_model) AS gpu_model, MAX(r.host_type) AS host_type
FROM resources r GROUP BY host_key
"""

# Each batch with its host and its physical device on that host (``device_key``: the GPU's
# hw.id where known, so processes pinned one per GPU, each calling theirs device 0, are that many
# devices; else the host and the device id, shared by the host's processes).
BATCHES_BY_HOST_SQL = f"""
SELECT b.*, {host_key_sql('b.resource_id')} AS host_key,
       {device_key_sql(host_key_sql('b.resource_id'), 'b.device_id', 'b.hw_id')} AS device_key
FROM batches b LEFT JOIN resources r ON r.resource_id = b.resource_id
"""

UNION_BY_DEVICE_SQL = f"""
WITH iv AS (
    SELECT host_key, device_key, start_ns AS s, end_ns AS e FROM ({BATCHES_BY_HOST_SQL}) bh
     WHERE start_ns IS NOT NULL AND end_ns IS NOT NULL AND end_ns >= start_ns
),
ordered AS (
    SELECT *, MAX(e) OVER (PARTITION BY host_key, device_key ORDER BY s, e
                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_e
    FROM iv
),
islands AS (
    SELECT *, SUM(CASE WHEN prev_e IS NULL OR s > prev_e THEN 1 ELSE 0 END)
                  OVER (PARTITION BY host_key, device_key ORDER BY s, e
                        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS island
    FROM ordered
),
merged AS (
    SELECT host_key, device_key, island, MIN(s) AS s, MAX(e) AS e
    FROM islands GROUP BY host_key, device_key, island
)
SELECT host_key, device_key, SUM(e - s) AS busy_union_ns FROM merged
GROUP BY host_key, device_key
"""

PER_DEVICE_SQL = f"""
WITH u AS ({UNION_BY_DEVICE_SQL}),
b AS (
    SELECT host_key, MIN(resource_id) AS resource_id, device_key,
           COALESCE(MAX(device_type), 'unknown') AS device_type,
           COUNT(*) AS n_batches,
           SUM(device_ns) AS device_ns,
           SUM(cpu_time_ns) AS cpu_time_ns,
           BOOL_AND(device_time_measured) AS measured,
           MAX(TRY_CAST(json_extract_string(attributes, '$."{semconv.DEVICE_CPU_THREADS}"')
                        AS BIGINT)) AS cpu_threads
    FROM ({BATCHES_BY_HOST_SQL}) bh GROUP BY host_key, device_key
),
h AS ({HOSTS_SQL})
SELECT COALESCE(h.resource_id, b.resource_id), b.device_key, b.device_type, b.n_batches,
       b.device_ns, b.cpu_time_ns, b.measured, COALESCE(u.busy_union_ns, 0) AS busy_union_ns,
       h.gpu_count, h.cpu_cores, h.gpu_model, h.host_type, b.cpu_threads
FROM b
LEFT JOIN u ON u.host_key IS NOT DISTINCT FROM b.host_key
           AND u.device_key IS NOT DISTINCT FROM b.device_key
LEFT JOIN h ON h.host_key = b.host_key
ORDER BY 1, b.device_key
"""

NVML_SQL = f"""
SELECT AVG(CASE WHEN value > 1.0 THEN value / 100.0 ELSE value END), COUNT(*)
FROM metric_points WHERE name = '{semconv.METRIC_HW_GPU_UTILIZATION}'
"""
# Schema "1" SDKs wrote the memory-controller busy fraction as hw.gpu.memory.utilization,
# which the hardware conventions (and schema "2") define as memory in use.
NVML_MEM_SQL = f"""
SELECT AVG(CASE WHEN value > 1.0 THEN value / 100.0 ELSE value END), COUNT(*)
FROM metric_points
WHERE name = '{semconv.METRIC_GPU_MEMORY_CONTROLLER_UTILIZATION}'
   OR (name = '{semconv.METRIC_HW_GPU_MEMORY_UTILIZATION}' AND resource_id IN (
       SELECT resource_id FROM resources
       WHERE json_extract_string(attributes, '$."{semconv.RES_SCHEMA_VERSION}"') = '1'))
"""
SPAN_MEM_UTIL_SQL = f"""
SELECT SUM(TRY_CAST(json_extract_string(attributes, '$."{semconv.GPU_MEMORY_UTILIZATION_RATIO}"')
                    AS DOUBLE) * duration_ns) / NULLIF(SUM(CASE WHEN json_extract_string(attributes,
           '$."{semconv.GPU_MEMORY_UTILIZATION_RATIO}"') IS NOT NULL THEN duration_ns END), 0)
FROM batches
"""
SPAN_GPU_UTIL_SQL = """
SELECT SUM(gpu_util * duration_ns) / NULLIF(SUM(CASE WHEN gpu_util IS NOT NULL
                                                     THEN duration_ns END), 0)
FROM batches
"""


@dataclass(frozen=True)
class ResourceUsage:
    """Busy device time of one resource (a process / host), in device-ns."""

    resource_id: int | None
    device_type: str
    devices: int
    busy_ns: int  # summed over its devices; CPU: instance-ns (cpu time / cores)
    n_batches: int
    gpu_model: str | None
    host_type: str | None
    cpu_cores: int | None
    busy_known: bool = True  # False: no model-call timing at all (requests only)
    cpu_threads: int | None = None  # CPU device: the most intra-op threads a model call used

    @property
    def ceiling_ratio(self) -> float | None:
        """The utilisation a CPU device can reach with the threads the model used: busy time
        is CPU time over all the host's cores, so 1 thread on 2 cores tops out at 0.5."""
        if self.device_type != "cpu" or not self.cpu_threads or not self.cpu_cores:
            return None
        return min(1.0, self.cpu_threads / self.cpu_cores)


# Fallback when no batch span exists: the paid units are the resources that served requests.
REQUEST_RESOURCES_SQL = f"""
SELECT MIN(q.resource_id), COUNT(*) AS n, SUM(q.device_ns) AS device_ns,
       COUNT(q.device_ns) AS timed,
       MAX(r.gpu_count), MAX(r.cpu_cores), MAX(r.gpu_model), MAX(r.host_type)
FROM requests q LEFT JOIN resources r ON r.resource_id = q.resource_id
GROUP BY {host_key_sql('q.resource_id')} ORDER BY 1
"""


@dataclass(frozen=True)
class Utilization:
    window_ns: int
    resources: tuple[ResourceUsage, ...]
    nvml_ratio: float | None
    nvml_samples: int
    span_gpu_util_ratio: float | None
    memory_util_ratio: float | None
    # (resource key, device key) -> (busy per device-ns, busy per CPU-ns) of that device's batches
    batch_scales: dict[tuple[Any, Any], tuple[float, float]] = field(default_factory=dict)
    # Demand beside the supply: a low utilisation while requests queue is serialisation, not
    # spare capacity (see analyses/idle.py). p95 queue time of requests; p50 model-call time.
    queue_p95_ns: int | None = None
    service_p50_ns: int | None = None

    @property
    def busy_from_batches(self) -> bool:
        """Whether busy time is known per model call (so it can be split by model and time)."""
        return self.source == "spans" and bool(self.batch_scales)

    @property
    def devices(self) -> int:
        return sum(r.devices for r in self.resources)

    @property
    def busy_ns(self) -> int:
        return sum(r.busy_ns for r in self.resources)

    @property
    def busy_known(self) -> bool:
        """Model-call timing measured the busy time of every resource."""
        return bool(self.resources) and all(r.busy_known for r in self.resources)

    @property
    def ratio(self) -> float | None:
        """Busy / paid device time; NVML's mean when no model call was traced."""
        if self.busy_known:
            return ratio(self.busy_ns, self.window_ns * self.devices)
        return self.nvml_ratio

    @property
    def source(self) -> str | None:
        """Where :attr:`ratio` came from: ``spans`` (model-call timing) or ``nvml``."""
        if self.busy_known:
            return "spans"
        return "nvml" if self.nvml_ratio is not None else None

    @property
    def ceiling_ratio(self) -> float | None:
        """The highest :attr:`ratio` the devices could reach as the model ran them (CPU: its
        threads over the cores); None unless every resource has one."""
        if not self.resources or self.source != "spans":
            return None
        ceilings = [r.ceiling_ratio for r in self.resources]
        if any(c is None for c in ceilings):
            return None
        return ratio(sum(c * r.devices for c, r in zip(ceilings, self.resources, strict=True)),
                     self.devices)

    def to_json(self) -> dict[str, Any]:
        return {
            "ratio": rounded(self.ratio, 4),
            "ceiling_ratio": rounded(self.ceiling_ratio, 4),
            "source": self.source,
            "devices": self.devices,
            "busy_device_s": self.busy_ns / 1e9,
            "nvml_ratio": rounded(self.nvml_ratio, 4),
            "nvml_samples": self.nvml_samples,
            "span_gpu_util_ratio": rounded(self.span_gpu_util_ratio, 4),
            "memory_util_ratio": rounded(self.memory_util_ratio, 4),
            "by_resource": [
                {"resource_id": r.resource_id, "device_type": r.device_type,
                 "devices": r.devices, "busy_device_s": r.busy_ns / 1e9,
                 "ratio": rounded(ratio(r.busy_ns, self.window_ns * r.devices), 4),
                 "gpu_model": r.gpu_model, "host_type": r.host_type,
                 "cpu_cores": r.cpu_cores, "cpu_threads": r.cpu_threads,
                 "ceiling_ratio": rounded(r.ceiling_ratio, 4)}
                for r in self.resources
            ],
        }


Scales = dict[tuple[Any, Any], tuple[float, float]]


def _resource_usage(rows: list[tuple[Any, ...]],
                    window_ns: int) -> tuple[list[ResourceUsage], Scales]:
    """Busy time per resource, and per (resource, device) the factors that turn a batch's device
    and CPU time into its share of that busy time (what models and time buckets are split by)."""
    by_res: dict[Any, list[tuple[Any, ...]]] = {}
    for row in rows:
        by_res.setdefault(row[0], []).append(row)
    out = []
    scales: Scales = {}
    for res_id, devs in by_res.items():
        gpu_count, cpu_cores, gpu_model, host_type = devs[0][8:12]
        types = {d[2] for d in devs}
        # no device type on the spans (beside CPU calls, if any) and a host without GPUs: the
        # model ran on the CPU
        is_cpu = types == {"cpu"} or (types <= {"cpu", "unknown"} and not gpu_count
                                      and not gpu_model)
        n_batches = sum(int(d[3]) for d in devs)
        if is_cpu:
            cpu_ns = sum(int(d[5] or 0) for d in devs)
            union_ns = sum(int(d[7]) for d in devs)
            by_cpu = bool(cpu_ns and cpu_cores)
            busy = min(int(cpu_ns / cpu_cores if by_cpu else union_ns), window_ns)
            basis_ns = cpu_ns if by_cpu else sum(int(d[4] or 0) for d in devs)
            k = busy / basis_ns if basis_ns else 0.0
            for d in devs:
                scales[(res_id, d[1])] = (0.0, k) if by_cpu else (k, 0.0)
            threads = max((int(d[12]) for d in devs if d[12] is not None), default=None)
            out.append(ResourceUsage(res_id, "cpu", 1, busy, n_batches, None, host_type,
                                     cpu_cores, cpu_threads=threads))
            continue
        # the paid devices are the host's GPUs: its CPU calls (views: device id 'cpu') ran on
        # the host's cores, not on one more device, and while they ran the GPU sat idle (a
        # tokenizer model or CPU fallback is time the serving stack left the GPU waiting), so
        # they are no part of its busy time and no model's share of it
        accel = [d for d in devs if d[2] != "cpu"]
        busy = 0
        for d in devs:
            if d[2] == "cpu":
                scales[(res_id, d[1])] = (0.0, 0.0)
                continue
            union_ns = int(d[7])
            measured, device_ns = bool(d[6]), int(d[4] or 0)
            dev_busy = min(union_ns, device_ns) if measured else union_ns
            busy += dev_busy
            scales[(res_id, d[1])] = (dev_busy / device_ns if device_ns else 0.0, 0.0)
        devices = max(int(gpu_count or 0), len(accel), 1)
        if busy > window_ns * devices:  # clocks that overran the window: at most all of it
            k = window_ns * devices / busy
            busy = window_ns * devices
            for d in devs:
                f_dev, f_cpu = scales[(res_id, d[1])]
                scales[(res_id, d[1])] = (f_dev * k, f_cpu * k)
        dtype = next(iter(types)) if len(types) == 1 else "mixed"
        out.append(ResourceUsage(res_id, dtype, devices, busy, n_batches, gpu_model, host_type,
                                 cpu_cores))
    return out, scales


def _request_resources(con: Any, window_ns: int) -> list[ResourceUsage]:
    out = []
    for res_id, _n, device_ns, timed, gpus, cores, gpu_model, host_type in con.execute(
            REQUEST_RESOURCES_SQL).fetchall():
        devices = max(int(gpus or 0), 1)
        dtype = "gpu" if gpus else ("cpu" if not gpu_model else "gpu")
        busy = min(int(device_ns or 0), window_ns * devices)
        out.append(ResourceUsage(res_id, dtype, devices, busy, 0, gpu_model, host_type, cores,
                                 busy_known=bool(timed)))
    return out


def analyze_utilization(con: Any, window_ns: int) -> Utilization:
    rows = con.execute(PER_DEVICE_SQL).fetchall()
    if rows:
        resources, scales = _resource_usage(rows, int(window_ns))
    else:
        resources, scales = _request_resources(con, int(window_ns)), {}
    queue_p95, service_p50 = con.execute(DEMAND_SQL).fetchone()
    nvml = con.execute(NVML_SQL).fetchone()
    nvml_mem = con.execute(NVML_MEM_SQL).fetchone()
    span_mem = con.execute(SPAN_MEM_UTIL_SQL).fetchone()[0]
    span_gpu = con.execute(SPAN_GPU_UTIL_SQL).fetchone()[0]
    mem = span_mem if span_mem is not None else (nvml_mem[0] if nvml_mem[1] else None)
    return Utilization(
        window_ns=int(window_ns),
        resources=tuple(resources),
        nvml_ratio=None if not nvml[1] else float(nvml[0]),
        nvml_samples=int(nvml[1]),
        span_gpu_util_ratio=None if span_gpu is None else float(span_gpu),
        memory_util_ratio=None if mem is None else float(mem),
        batch_scales=scales,
        queue_p95_ns=None if queue_p95 is None else int(queue_p95),
        service_p50_ns=None if service_p50 is None else int(service_p50),
    )


# Which requests each model call served, with their model, route and token weight: the
# ``batch_members`` view (views.py), the one membership rule that the requests view's device time
# is shared by too.
BATCH_MEMBERS_SQL = """
SELECT m.batch_trace_id, m.batch_span_id, q.trace_id AS req_trace_id, q.span_id AS req_span_id,
       q.request_model, q.route,
       CAST(COALESCE(q.input_tokens, 0) + COALESCE(q.output_tokens, 0) AS DOUBLE) AS w
FROM batch_members m JOIN requests q ON q.trace_id = m.req_trace_id AND q.span_id = m.req_span_id
"""

# Where a share row's (model, route) came from (the ``basis`` column of BATCH_SHARES_SQL): a request
# the call served, else the attribution rule for a call no request links to, first that applies:
BASIS_LINKED = "linked"
# (a) a requested model has its name: that model, its routes as its requests' (by count)
BASIS_REQUESTED_MODEL = "requested_model"
# (b) its name is on linked calls: as those calls' device time went to (model, route) (the
#     loaded model's warm-up calls serve the alias the requests ask for; global: the mapping is
#     the deployment's)
BASIS_CALL_NAME = "call_name"
# (c) its host serves requests but no call there links to one, nor is one of its requests linked
#     (no link information there at all): the host's requests by count, as the cost split shared
#     a host without linked device time
BASIS_HOST_REQUESTS = "host_requests"
# (c') no call in the whole input links to any request, and its host serves none (a GPU worker
#     behind a gateway on another machine): all requests by count, as the cost split shared a
#     host no request links to
BASIS_INPUT_REQUESTS = "input_requests"
# (d) else a workload of its own: its own model name, no route (by_model's request-less rows)
BASIS_OWN = "own"

# Each model call's share per (requested model, route): per member request, token-weighted as the
# requests view shares its device time (evenly where no member has tokens); a call no request in
# the input links to (``req_span_id`` null), by the rule above. Utilisation (busy_by_model) and
# cost (cost.py's usage) both read it, so the model and route splits attribute a call alike.
# ``call_model`` is the call's own model name. Read several times per report: ``shares_table``
# snapshots it once.
BATCH_SHARES_SQL = f"""
WITH mem AS ({BATCH_MEMBERS_SQL}),
bh AS (
    SELECT x.trace_id AS trace_id, x.span_id AS span_id, x.request_model AS call_model,
           x.host_key AS host_key, CAST(COALESCE(x.device_ns, 0) AS DOUBLE) AS dev
    FROM ({BATCHES_BY_HOST_SQL}) x
),
served AS (
    SELECT bh.trace_id AS batch_trace_id, bh.span_id AS batch_span_id,
           bh.call_model AS call_model, bh.host_key AS host_key, bh.dev AS dev,
           mem.req_trace_id AS req_trace_id, mem.req_span_id AS req_span_id,
           mem.request_model AS request_model, mem.route AS route, mem.w AS w,
           SUM(mem.w) OVER (PARTITION BY bh.trace_id, bh.span_id) AS w_total,
           COUNT(*) OVER (PARTITION BY bh.trace_id, bh.span_id) AS n_members
    FROM bh LEFT JOIN mem ON mem.batch_trace_id = bh.trace_id AND mem.batch_span_id = bh.span_id
),
linked AS (
    SELECT batch_trace_id, batch_span_id, req_trace_id, req_span_id, request_model, route,
           CASE WHEN w_total > 0 THEN w / w_total ELSE 1.0 / n_members END AS f,
           call_model, host_key, dev
    FROM served WHERE req_span_id IS NOT NULL
),
unlinked AS (
    SELECT batch_trace_id, batch_span_id, call_model, host_key
    FROM served WHERE req_span_id IS NULL
),
by_name AS (
    SELECT call_model, request_model, route, SUM(f * dev) AS w_dev, SUM(f) AS w_n
    FROM linked WHERE call_model IS NOT NULL GROUP BY call_model, request_model, route
),
name_split AS (
    SELECT call_model AS k, request_model, route,
           CASE WHEN SUM(w_dev) OVER (PARTITION BY call_model) > 0
                THEN w_dev / SUM(w_dev) OVER (PARTITION BY call_model)
                ELSE w_n / SUM(w_n) OVER (PARTITION BY call_model) END AS f
    FROM by_name
),
req_host AS (
    SELECT q.trace_id AS trace_id, q.span_id AS span_id, q.request_model AS request_model,
           q.route AS route, {host_key_sql('q.resource_id')} AS host_key
    FROM requests q LEFT JOIN resources r ON r.resource_id = q.resource_id
),
by_model AS (
    SELECT request_model, route, CAST(COUNT(*) AS DOUBLE) AS n
    FROM req_host WHERE request_model IS NOT NULL GROUP BY request_model, route
),
model_split AS (
    SELECT request_model AS k, request_model, route,
           n / SUM(n) OVER (PARTITION BY request_model) AS f
    FROM by_model
),
linked_hosts AS (
    SELECT host_key AS k FROM linked WHERE host_key IS NOT NULL
    UNION ALL
    SELECT rh.host_key AS k FROM req_host rh
    JOIN linked l ON l.req_trace_id = rh.trace_id AND l.req_span_id = rh.span_id
    WHERE rh.host_key IS NOT NULL
),
by_host AS (
    SELECT rh.host_key AS host_key, rh.request_model AS request_model, rh.route AS route,
           CAST(COUNT(*) AS DOUBLE) AS n
    FROM req_host rh LEFT JOIN (SELECT DISTINCT k FROM linked_hosts) lh ON lh.k = rh.host_key
    WHERE rh.host_key IS NOT NULL AND lh.k IS NULL
    GROUP BY rh.host_key, rh.request_model, rh.route
),
host_split AS (
    SELECT host_key AS k, request_model, route, n / SUM(n) OVER (PARTITION BY host_key) AS f
    FROM by_host
),
by_all AS (
    SELECT request_model, route, CAST(COUNT(*) AS DOUBLE) AS n
    FROM req_host GROUP BY request_model, route
),
all_split AS (
    SELECT request_model, route, n / SUM(n) OVER () AS f FROM by_all
),
no_links AS (
    SELECT CASE WHEN l.n = 0 AND a.n > 0 THEN 1 ELSE 0 END AS yes
    FROM (SELECT COUNT(*) AS n FROM linked) l CROSS JOIN (SELECT COUNT(*) AS n FROM by_all) a
),
pick AS (
    SELECT u.batch_trace_id AS batch_trace_id, u.batch_span_id AS batch_span_id,
           u.call_model AS call_model, u.host_key AS host_key,
           CASE WHEN b.k IS NOT NULL THEN '{BASIS_REQUESTED_MODEL}'
                WHEN a.k IS NOT NULL THEN '{BASIS_CALL_NAME}'
                WHEN c.k IS NOT NULL THEN '{BASIS_HOST_REQUESTS}'
                WHEN nl.yes = 1 THEN '{BASIS_INPUT_REQUESTS}'
                ELSE '{BASIS_OWN}' END AS basis
    FROM unlinked u CROSS JOIN no_links nl
    LEFT JOIN (SELECT DISTINCT k FROM name_split) a ON a.k = u.call_model
    LEFT JOIN (SELECT DISTINCT k FROM model_split) b ON b.k = u.call_model
    LEFT JOIN (SELECT DISTINCT k FROM host_split) c ON c.k = u.host_key
)
SELECT batch_trace_id, batch_span_id, req_trace_id, req_span_id, request_model, route, f,
       call_model, '{BASIS_LINKED}' AS basis
FROM linked
UNION ALL
SELECT p.batch_trace_id, p.batch_span_id, CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR),
       s.request_model, s.route, s.f, p.call_model, p.basis
FROM pick p JOIN name_split s ON s.k = p.call_model WHERE p.basis = '{BASIS_CALL_NAME}'
UNION ALL
SELECT p.batch_trace_id, p.batch_span_id, CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR),
       s.request_model, s.route, s.f, p.call_model, p.basis
FROM pick p JOIN model_split s ON s.k = p.call_model WHERE p.basis = '{BASIS_REQUESTED_MODEL}'
UNION ALL
SELECT p.batch_trace_id, p.batch_span_id, CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR),
       s.request_model, s.route, s.f, p.call_model, p.basis
FROM pick p JOIN host_split s ON s.k = p.host_key WHERE p.basis = '{BASIS_HOST_REQUESTS}'
UNION ALL
SELECT p.batch_trace_id, p.batch_span_id, CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR),
       s.request_model, s.route, s.f, p.call_model, p.basis
FROM pick p CROSS JOIN all_split s WHERE p.basis = '{BASIS_INPUT_REQUESTS}'
UNION ALL
SELECT batch_trace_id, batch_span_id, CAST(NULL AS VARCHAR), CAST(NULL AS VARCHAR),
       call_model, CAST(NULL AS VARCHAR), 1.0, call_model, basis
FROM pick WHERE basis = '{BASIS_OWN}'
"""

# Each batch with the resource key PER_DEVICE_SQL reports it under (the host's first resource)
# and its device key there (``device_id`` here: the key of ``Utilization.batch_scales``).
ATTRIBUTED_BATCHES_SQL = f"""
SELECT COALESCE(h.resource_id, bh.resource_id) AS res_key, bh.device_key AS device_id,
       bh.request_model,
       bh.start_ns, bh.end_ns, CAST(COALESCE(bh.device_ns, 0) AS DOUBLE) AS w_dev,
       CAST(COALESCE(bh.cpu_time_ns, 0) AS DOUBLE) AS w_cpu, bh.trace_id, bh.span_id
FROM ({BATCHES_BY_HOST_SQL}) bh LEFT JOIN ({HOSTS_SQL}) h ON h.host_key = bh.host_key
"""

# A model's busy weight: its requests' shares of the calls that served them (a call serving two
# models counts for each by token share), so it follows the model the client asked for, not the
# name the call carries ("default" asked, "llama-3-8b" loaded).
MODEL_WEIGHTS_SQL = f"""
SELECT ab.res_key, ab.device_id, sh.request_model, SUM(ab.w_dev * sh.f), SUM(ab.w_cpu * sh.f)
FROM ({ATTRIBUTED_BATCHES_SQL}) ab
JOIN {{shares}} sh ON sh.batch_trace_id = ab.trace_id AND sh.batch_span_id = ab.span_id
GROUP BY ab.res_key, ab.device_id, sh.request_model
"""

SHARES_INLINE = f"({BATCH_SHARES_SQL})"


@contextmanager
def shares_table(con: Any, name: str = "batch_shares") -> Iterator[str]:
    """BATCH_SHARES_SQL snapshotted into a temporary table for the queries of one report (each
    evaluation joins links, spans and requests); yields the name to read it by."""
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {BATCH_SHARES_SQL}")
    try:
        yield name
    finally:
        con.execute(f"DROP TABLE IF EXISTS temp.{name}")

# No batch spans: the busy time came from the requests' own device time (_request_resources).
MODEL_REQUEST_DEVICE_SQL = """
SELECT request_model, COALESCE(SUM(device_ns), 0) FROM requests GROUP BY request_model
"""


def busy_by_model(con: Any, util: Utilization,
                  shares: str = SHARES_INLINE) -> dict[Any, float] | None:
    """Busy device-ns per requested model (``request_model`` of the requests a call served, by
    token share; a call no request links to, as BATCH_SHARES_SQL attributes it; None for
    unknown), on the
    overall basis: the values add up to ``util.busy_ns``. None when the busy time is not known.
    ``shares``: BATCH_SHARES_SQL, inline or the name of its snapshot (``shares_table``)."""
    if util.source != "spans":
        return None
    out: dict[Any, float] = {}
    if util.busy_from_batches:
        for res, dev, model, w_dev, w_cpu in con.execute(
                MODEL_WEIGHTS_SQL.replace("{shares}", shares)).fetchall():
            k_dev, k_cpu = util.batch_scales.get((res, dev), (0.0, 0.0))
            out[model] = out.get(model, 0.0) + k_dev * float(w_dev or 0) + k_cpu * float(
                w_cpu or 0)
        return out
    rows = con.execute(MODEL_REQUEST_DEVICE_SQL).fetchall()
    total = sum(int(d or 0) for _, d in rows)
    return {m: util.busy_ns * int(d or 0) / total if total else 0.0 for m, d in rows}


# A batch's weight spread evenly over its wall interval, cut at bucket edges: the first and last
# bucket it touches get their overlap's share (kind 0); the buckets it covers whole get
# width/duration each, sent as +rate at the first covered bucket and -rate after the last
# (kind 1, a difference array summed up in Python). Plain arithmetic, portable to ClickHouse.
SPREAD_SQL = """
WITH x AS (
    SELECT res_key, device_id, w_dev, w_cpu,
           CAST(start_ns - {t0} AS DOUBLE) AS s, CAST(end_ns - {t0} AS DOUBLE) AS e
    FROM ({src}) ab WHERE start_ns IS NOT NULL AND end_ns IS NOT NULL AND end_ns >= start_ns
),
y AS (
    SELECT res_key, device_id, w_dev, w_cpu, s, e, e - s AS dur,
           CAST(FLOOR(s / {w}) AS BIGINT) AS sb, CAST(FLOOR(e / {w}) AS BIGINT) AS eb
    FROM x
)
SELECT res_key, device_id, sb AS bucket, 0 AS kind,
       SUM(CASE WHEN eb = sb OR dur = 0 THEN w_dev ELSE w_dev * ((sb + 1) * {w} - s) / dur END),
       SUM(CASE WHEN eb = sb OR dur = 0 THEN w_cpu ELSE w_cpu * ((sb + 1) * {w} - s) / dur END)
FROM y GROUP BY res_key, device_id, sb
UNION ALL
SELECT res_key, device_id, eb AS bucket, 0 AS kind,
       SUM(w_dev * (e - eb * {w}) / dur), SUM(w_cpu * (e - eb * {w}) / dur)
FROM y WHERE eb > sb GROUP BY res_key, device_id, eb
UNION ALL
SELECT res_key, device_id, sb + 1 AS bucket, 1 AS kind,
       SUM(w_dev * {w} / dur), SUM(w_cpu * {w} / dur)
FROM y WHERE eb > sb + 1 GROUP BY res_key, device_id, sb + 1
UNION ALL
SELECT res_key, device_id, eb AS bucket, 1 AS kind,
       -SUM(w_dev * {w} / dur), -SUM(w_cpu * {w} / dur)
FROM y WHERE eb > sb + 1 GROUP BY res_key, device_id, eb
"""


def busy_by_bucket(con: Any, util: Utilization, start_ns: int,
                   width_ns: float) -> dict[int, float] | None:
    """Busy device-ns per time bucket (index from ``start_ns``), on the overall basis, each
    batch's share spread over its wall interval: the values add up to ``util.busy_ns``. None
    when busy time is not known per model call (NVML only, or no batch spans)."""
    if not util.busy_from_batches:
        return None
    sql = SPREAD_SQL.format(src=ATTRIBUTED_BATCHES_SQL, t0=int(start_ns),
                           w=f"CAST({float(width_ns)!r} AS DOUBLE)")
    direct: dict[int, float] = {}
    delta: dict[int, float] = {}
    for res, dev, bucket, kind, w_dev, w_cpu in con.execute(sql).fetchall():
        k_dev, k_cpu = util.batch_scales.get((res, dev), (0.0, 0.0))
        v = k_dev * float(w_dev or 0) + k_cpu * float(w_cpu or 0)
        target = delta if int(kind) else direct
        target[int(bucket)] = target.get(int(bucket), 0.0) + v
    run = 0.0
    for b in range(min(delta, default=0), max(delta, default=0)):  # past the last: rate is 0
        run += delta.get(b, 0.0)
        direct[b] = direct.get(b, 0.0) + run
    return direct


DEMAND_SQL = """
SELECT (SELECT quantile_disc(queue_ns, 0.95) FROM requests WHERE queue_ns IS NOT NULL),
       COALESCE((SELECT quantile_disc(end_ns - start_ns, 0.5) FROM batches
                  WHERE end_ns IS NOT NULL AND start_ns IS NOT NULL),
                (SELECT quantile_disc(model_ns, 0.5) FROM requests))
"""


def dram_bound_decode(util: Utilization, output_share: float | None,
                      batch_size_mean: float | None) -> list[Finding]:
    """High memory-controller activity in decode-dominated work: the model's physics."""
    mem = util.memory_util_ratio
    if mem is None or output_share is None:
        return []
    if mem < th.DRAM_BOUND_MEMORY_UTIL_RATIO or output_share < th.DECODE_DOMINATED_OUTPUT_SHARE:
        return []
    return [Finding(
        id="dram_bound_decode",
        title="Decode is bound by memory bandwidth (the model's physics, not a hardware fault)",
        severity="info",
        layer="model",
        evidence={
            "memory_util_ratio": round(mem, 4),
            "output_token_share_ratio": round(output_share, 4),
            "batch_size_mean": None if batch_size_mean is None else round(batch_size_mean, 2),
            "threshold_memory_util_ratio": th.DRAM_BOUND_MEMORY_UTIL_RATIO,
        },
        detail=("Autoregressive decode reads the weights once per step, so HBM bandwidth bounds "
                "it. Larger batches, quantised weights or speculative decoding raise tokens per "
                "byte; faster hardware only moves the bound."),
    )]
