"""The ``requests``, ``batches`` and ``batch_members`` views over the canonical tables
(docs/data-model.md).

Every analysis reads these views rather than raw spans, so the rules that turn spans into
requests (which span is the request a client waits on, which requests a batch served, how its
device time is shared out) live in exactly one place. Plain SQL with window functions: the
same text runs on DuckDB and, with the JSON accessor swapped, on ClickHouse.
"""

from __future__ import annotations

from typing import Any

from inferaudit_sdk import semconv

# A span is a request if the SDK marked it so, or if it is a foreign GenAI span (no role, or a
# role the ingest inferred from its usage) that reports usage. Ours outrank foreign ones, whichever
# way they nest: a request-like span whose parent is a request span is that request's model call
# (its tokens and device time fill the enclosing one's gaps, batches linked to it count for the
# enclosing one) unless the nested span is ours and the parent foreign; a foreign span above one of
# ours (a GenAI client instrumentation in the calling app, up to CLIENT_VIEW_HOPS parents up, past
# HTTP client and SERVER spans) is the client's view of that request, not a request of its own,
# and the GenAI spans directly under it are requests of their own (its other calls). One of ours
# with one of ours above it, up to CLIENT_VIEW_HOPS parents up past role-less spans (a gateway's
# HTTP client span, the model server's SERVER span) and client views (the gateway's GenAI client
# span), is that request's model call like a directly nested one: a gateway and a model server
# both instrumented are one request, the gateway's (the one its client waits on). Chains of calls
# (a gateway, the model server under it, a foreign span under that) resolve NEST_LEVELS deep.
_SERVER_KIND = 2
CLIENT_VIEW_HOPS = 4
NEST_LEVELS = 3
# The span kinds a nesting walk passes: UNSPECIFIED (read as INTERNAL), INTERNAL, SERVER, CLIENT;
# not PRODUCER / CONSUMER (a queued hand-off is not a call the request waits in).
_WALK_KINDS = "(0, 1, 2, 3)"
# A request that failed: OTel status ERROR, or an error.type. One predicate over the requests
# view for every reader that keeps failures apart (latency percentiles, routing, the ROI replay).
ERRORED_SQL = "(COALESCE(status_code, 0) = 2 OR error_type IS NOT NULL)"
# A batch span (alias ``b``) whose call ran under the SDK's profile sampling: it references its
# trace, or says so (an SDK whose trace could not be written still marks the call). Never NULL.
PROFILED_EXPR = (f"b.profile_path IS NOT NULL OR COALESCE(json_extract_string(b.attributes, "
                 f"'$.\"{semconv.PROFILE_SAMPLED}\"') = 'true', FALSE)")
# Over the rows of the batch spans (columns ``profiled``, as above, and ``resource_id``): a
# profiled call is kept apart from the latency statistics and the ROI's fit while its process
# (whose profile_every_n decides) ran a call the profiler did not slow down; where every call of
# a process was profiled (``profile_every_n=1``), they are all the measurement of it there is,
# and they are kept in (the baseline says so: ``profiled_in_percentiles``).
PROFILED_APART_SQL = ("(profiled AND MIN(CASE WHEN profiled THEN 1 ELSE 0 END) "
                      "OVER (PARTITION BY resource_id) = 0)")
# A request of the ``requests`` view whose latency the percentiles (latency, TTFT, TPOT, queue,
# model time) are over: it succeeded, and none of its model calls ran under the SDK's profile
# sampling (a sampled call pays the profiler's start, export and compression on its own path,
# docs/device-instrumentation.md) unless every call did. Failed and profiled requests still
# count everywhere else.
LATENCY_SAMPLE_SQL = f"(NOT {ERRORED_SQL} AND NOT profiled_apart)"


def device_key_sql(scope_col: str, device_col: str = "device_id",
                   hw_col: str = "hw_id") -> str:
    """One physical device, as one string: the rule every per-device reader keys by.

    Where the span names its device host-wide (``hw_id``: a GPU's UUID) that is the device,
    shared by every process on it: processes pinned one per GPU each call theirs CUDA device
    0, and two processes on one GPU are one device. Else the device id within ``scope_col``,
    the reader's scope for an index that is only local: a resource (a process: concurrency,
    the ROI's workers) or a host (utilisation: processes on one machine share its devices).
    A UUID (``GPU-...``) never reads as a ``scope/index`` key."""
    return (f"COALESCE({hw_col}, "
            f"COALESCE(CAST({scope_col} AS VARCHAR), '') || '/' || {device_col})")


# Device id and hw.id sit in the attributes JSON (not promoted columns); the accessor is DuckDB's
# and is the one engine-specific expression here (ClickHouse: JSONExtractString).
DEVICE_ID_EXPR = f"""json_extract_string(b.attributes, '$."{semconv.DEVICE_ID}"')"""
HW_ID_EXPR = f"""json_extract_string(b.attributes, '$."{semconv.HW_ID}"')"""


def _usage_sql(a: str) -> str:
    """A span that reports GenAI usage (tokens, and an operation or model): request-like."""
    return (f"({a}.input_tokens IS NOT NULL OR {a}.output_tokens IS NOT NULL) "
            f"AND ({a}.operation IS NOT NULL OR {a}.request_model IS NOT NULL)")


def _ours_sql(a: str) -> str:
    return (f"{a}.role = '{semconv.ROLE_REQUEST}' "
            f"AND COALESCE({a}.source, 'inferaudit') = 'inferaudit'")


# The request-like spans, ours flagged. Both views below read it.
_GENAI_SQL = f"""SELECT s.*,
           CASE WHEN {_ours_sql('s')} THEN TRUE ELSE FALSE END AS ours
    FROM spans s
    WHERE s.role = '{semconv.ROLE_REQUEST}'
       OR (s.role IS NULL AND {_usage_sql('s')})"""


def _ancestors_sql(hops: int) -> str:
    """Each of our request spans with its parent, grandparent, ... ``hops`` spans up, and
    ``caller_span_id``: the nearest request span of ours among them where only role-less spans
    and foreign GenAI spans (each of them, up here, a client's view of this one: dropped) lie
    between (NULL: none, or a span of another role, kind or process first)."""
    cols = ", ".join(f"p{i}.span_id AS a{i}" for i in range(1, hops + 1))
    joins = "\n    ".join(
        f"LEFT JOIN spans p{i} ON p{i}.trace_id = r.trace_id AND p{i}.span_id = "
        + ("r.parent_span_id" if i == 1 else f"p{i - 1}.parent_span_id")
        for i in range(1, hops + 1))
    steps = []
    for i in range(1, hops + 1):
        steps.append(f"WHEN {_ours_sql(f'p{i}')} THEN p{i}.span_id")
        if i < hops:  # every operand NULL-safe: a missing span stops the walk, never passes
            steps.append(f"WHEN NOT (p{i}.span_id IS NOT NULL "
                         f"AND COALESCE(p{i}.role, '{semconv.ROLE_REQUEST}') "
                         f"= '{semconv.ROLE_REQUEST}' "
                         f"AND COALESCE(p{i}.kind, 0) IN {_WALK_KINDS}) THEN NULL")
    return f"""SELECT r.trace_id, r.span_id, {cols},
           CASE {' '.join(steps)} END AS caller_span_id
    FROM genai r
    {joins}
    WHERE r.ours AND r.parent_span_id IS NOT NULL"""


def _client_view_sql(hops: int) -> str:
    return "\n    UNION\n    ".join(
        f"SELECT trace_id, a{i} AS span_id FROM ancestors WHERE a{i} IS NOT NULL"
        for i in range(1, hops + 1))


def _fill_sql(levels: int) -> str:
    """``fill1`` .. ``fill{levels}``: each nested model call (``folded``) with its tokens and
    device time, gaps filled from the calls nested in it, ``levels - 1`` levels down."""
    ctes = ["""fill1 AS (
    SELECT trace_id, span_id, outer_span_id, input_tokens, output_tokens, device_time_ns
    FROM folded WHERE outer_span_id IS NOT NULL
)"""]
    for k in range(2, levels + 1):
        ctes.append(f"""fill{k} AS (
    SELECT l.trace_id, l.span_id, l.outer_span_id,
           COALESCE(l.input_tokens, s.input_tokens) AS input_tokens,
           COALESCE(l.output_tokens, s.output_tokens) AS output_tokens,
           COALESCE(l.device_time_ns, s.device_time_ns) AS device_time_ns
    FROM fill1 l
    LEFT JOIN (SELECT trace_id, outer_span_id, SUM(input_tokens) AS input_tokens,
                      SUM(output_tokens) AS output_tokens, SUM(device_time_ns) AS device_time_ns
               FROM fill{k - 1} GROUP BY trace_id, outer_span_id) s
           ON s.trace_id = l.trace_id AND s.outer_span_id = l.span_id
)""")
    return ",\n".join(ctes)


def _folded_request_sql(levels: int) -> str:
    """Each nested model call (``folded``: folded_spans) with the request it counts for: the
    span enclosing it, else that span's enclosing span ..., ``levels`` nestings up (none where
    the chain is deeper). An enclosing span that is not folded itself is a request."""
    joins = "\n    ".join(
        f"LEFT JOIN folded l{i} ON l{i}.trace_id = l1.trace_id "
        f"AND l{i}.span_id = l{i - 1}.outer_span_id" for i in range(2, levels + 2))
    chain = ", ".join(f"l{i}.outer_span_id" for i in range(levels, 0, -1))
    return f"""SELECT l1.trace_id, l1.span_id, COALESCE({chain}) AS req_span_id
    FROM folded l1
    {joins}
    WHERE l1.outer_span_id IS NOT NULL AND l{levels + 1}.span_id IS NULL"""


# The request-like spans that are not requests of their own: the client's views of ours
# (``outer_span_id`` NULL: dropped) and the nested model calls, each with the request-like span
# directly enclosing it (``outer_span_id``, itself possibly nested) and its own tokens and device
# time. Kept apart from request_spans so that each engine reads it once, from its snapshot, where
# the nesting is resolved (the fill below, batch_members' chain). Internal.
FOLDED_SPANS_VIEW_SQL = f"""
CREATE OR REPLACE VIEW folded_spans AS
WITH genai AS (
    {_GENAI_SQL}
),
ancestors AS (
    {_ancestors_sql(CLIENT_VIEW_HOPS)}
),
client_view AS (
    -- foreign GenAI spans above one of our request spans: the caller's view of that request
    SELECT DISTINCT a.trace_id, a.span_id
    FROM ({_client_view_sql(CLIENT_VIEW_HOPS)}) a
    JOIN genai g ON g.trace_id = a.trace_id AND g.span_id = a.span_id
    WHERE NOT g.ours
)
-- a foreign request-like span whose parent is a request span is that request's model call,
-- unless the parent is a client's view (dropped: its other GenAI children are calls of their
-- own) or it is one itself (dropped: the call is the request of ours below it); one of ours is
-- the model call of the request span of ours nearest above it, past role-less spans and client
-- views (ancestors.caller_span_id: a gateway's request above a model server's)
SELECT g.trace_id, g.span_id, p.span_id AS outer_span_id,
       g.input_tokens, g.output_tokens, g.device_time_ns
FROM genai g
JOIN spans p ON p.trace_id = g.trace_id AND p.span_id = g.parent_span_id
            AND p.role = '{semconv.ROLE_REQUEST}'
WHERE NOT g.ours
  AND NOT EXISTS (SELECT 1 FROM client_view v
                  WHERE v.trace_id = p.trace_id AND v.span_id = p.span_id)
  AND NOT EXISTS (SELECT 1 FROM client_view v
                  WHERE v.trace_id = g.trace_id AND v.span_id = g.span_id)
UNION ALL
SELECT g.trace_id, g.span_id, a.caller_span_id AS outer_span_id,
       g.input_tokens, g.output_tokens, g.device_time_ns
FROM ancestors a
JOIN genai g ON g.trace_id = a.trace_id AND g.span_id = a.span_id
WHERE a.caller_span_id IS NOT NULL
UNION ALL
SELECT v.trace_id, v.span_id, NULL, NULL, NULL, NULL
FROM client_view v
"""

# The request-like spans that are requests (none of folded_spans), with the tokens and own
# device time their nested model calls fill in (NEST_LEVELS deep). Internal: ``batch_members``
# and ``requests`` read it.
REQUEST_SPANS_VIEW_SQL = f"""
CREATE OR REPLACE VIEW request_spans AS
WITH genai AS (
    {_GENAI_SQL}
),
folded AS (
    -- read once: DuckDB expands a view at each mention, a CTE it computes once
    SELECT * FROM folded_spans
),
{_fill_sql(NEST_LEVELS)},
nested_sum AS (
    SELECT trace_id, outer_span_id, SUM(input_tokens) AS input_tokens,
           SUM(output_tokens) AS output_tokens, SUM(device_time_ns) AS device_time_ns
    FROM fill{NEST_LEVELS} GROUP BY trace_id, outer_span_id
),
candidate AS (
    SELECT g.* FROM genai g
    WHERE NOT EXISTS (SELECT 1 FROM folded f
                      WHERE f.trace_id = g.trace_id AND f.span_id = g.span_id)
)
SELECT c.trace_id, c.span_id, c.parent_span_id, c.request_model, c.route, c.model_tier,
       c.service_name, c.resource_id, c.start_ns, c.end_ns, c.duration_ns, c.ttft_ns, c.tpot_ns,
       c.queue_ns, c.cache_hit, c.prompt_fp, c.prompt_simhash, c.fp_key_id, c.error_type,
       c.status_code, c.stream,
       COALESCE(c.input_tokens, ns.input_tokens) AS in_tok,
       COALESCE(c.output_tokens, ns.output_tokens) AS out_tok,
       COALESCE(c.device_time_ns, ns.device_time_ns) AS own_device_ns
FROM candidate c
LEFT JOIN nested_sum ns ON ns.trace_id = c.trace_id AND ns.outer_span_id = c.span_id
"""


def _member_walk_sql(hops: int) -> str:
    """Each batch target that is no request nor nested model call, with the request of the
    first request span among its ancestors up to ``hops`` parents up (NULL: none, or the walk
    met a SERVER span of no request first)."""
    joins = ["JOIN spans s0 ON s0.trace_id = m.req_trace_id AND s0.span_id = m.target_span_id"]
    cases = []
    for i in range(1, hops + 1):
        # the walk stays within the serving process: it stops at a SERVER span of no request
        cases.append(f"WHEN s{i - 1}.kind = {_SERVER_KIND} "
                     f"AND COALESCE(s{i - 1}.role, '') <> '{semconv.ROLE_REQUEST}' THEN NULL")
        cases.append(f"WHEN c{i}.req_span_id IS NOT NULL THEN c{i}.req_span_id")
        if i < hops:
            joins.append(f"LEFT JOIN spans s{i} ON s{i}.trace_id = m.req_trace_id "
                         f"AND s{i}.span_id = s{i - 1}.parent_span_id")
        joins.append(f"LEFT JOIN request_of c{i} ON c{i}.trace_id = m.req_trace_id "
                     f"AND c{i}.span_id = s{i - 1}.parent_span_id")
    return (f"SELECT m.batch_trace_id, m.batch_span_id, m.req_trace_id,\n"
            f"           CASE {' '.join(cases)} END AS req_span_id\n"
            f"    FROM member_raw m\n    " + "\n    ".join(joins) + "\n"
            "    WHERE NOT EXISTS (SELECT 1 FROM request_of c WHERE c.trace_id = "
            "m.req_trace_id AND c.span_id = m.target_span_id)")


# Which request each model call served: its links, else its parent (unbatched serving); a target
# that is a nested model call (folded_spans) counts for the request it folds into, and one that is
# neither for the request of the first request span above it, up to MEMBER_HOPS spans up (a span
# of the serving code between the request and its model call, "generate", "forward": the request
# it ran in). The walk never crosses a SERVER span of no request (another service's entry): a
# model server's request span under a gateway's request is reached as a nested model call, by the
# rule that found it (ours on both sides), not by walking past the server's SERVER span. The one
# definition of batch membership: the requests view's device time, the cost and utilisation
# shares read it.
MEMBER_HOPS = 3
BATCH_MEMBERS_VIEW_SQL = f"""
CREATE OR REPLACE VIEW batch_members AS
WITH member_raw AS (
    SELECT l.trace_id AS batch_trace_id, l.span_id AS batch_span_id,
           l.linked_trace_id AS req_trace_id, l.linked_span_id AS target_span_id
    FROM links l
    JOIN spans b ON b.trace_id = l.trace_id AND b.span_id = l.span_id
                AND b.role = '{semconv.ROLE_BATCH}'
    UNION
    SELECT b.trace_id, b.span_id, b.trace_id, b.parent_span_id
    FROM spans b
    WHERE b.role = '{semconv.ROLE_BATCH}' AND b.parent_span_id IS NOT NULL
      AND NOT EXISTS (SELECT 1 FROM links l
                      WHERE l.trace_id = b.trace_id AND l.span_id = b.span_id)
),
folded AS (
    SELECT trace_id, span_id, outer_span_id FROM folded_spans
),
request_of AS (
    -- a request counts for itself, a nested model call for the request it folds into
    SELECT trace_id, span_id, span_id AS req_span_id FROM request_spans
    UNION ALL
    {_folded_request_sql(NEST_LEVELS)}
),
direct AS (
    SELECT m.batch_trace_id, m.batch_span_id, m.req_trace_id, c.req_span_id
    FROM member_raw m
    JOIN request_of c ON c.trace_id = m.req_trace_id AND c.span_id = m.target_span_id
),
walked AS (
    {_member_walk_sql(MEMBER_HOPS)}
)
SELECT DISTINCT batch_trace_id, batch_span_id, req_trace_id, req_span_id
FROM (SELECT * FROM direct
      UNION ALL
      SELECT * FROM walked WHERE req_span_id IS NOT NULL) u
"""

REQUESTS_VIEW_SQL = f"""
CREATE OR REPLACE VIEW requests AS
WITH server AS (
    -- an enclosing SERVER span is the client-visible request only of a lone request under it
    SELECT p.trace_id, p.span_id, p.start_ns, p.end_ns, p.duration_ns
    FROM spans p
    JOIN request_spans c ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id
    WHERE p.kind = {_SERVER_KIND}
    GROUP BY p.trace_id, p.span_id, p.start_ns, p.end_ns, p.duration_ns
    HAVING COUNT(*) = 1
),
batch_spans AS (
    SELECT b.trace_id, b.span_id, b.resource_id,
           COALESCE(b.device_time_ns,
                    CASE WHEN b.device_type = 'cpu' THEN b.cpu_time_ns END,
                    b.duration_ns) AS device_ns,
           ({PROFILED_EXPR}) AS profiled
    FROM spans b
    WHERE b.role = '{semconv.ROLE_BATCH}'
),
batch_marks AS (
    SELECT *, {PROFILED_APART_SQL} AS profiled_apart FROM batch_spans
),
weighted AS (
    SELECT m.req_trace_id, m.req_span_id, b.device_ns, b.profiled, b.profiled_apart,
           COALESCE(c.in_tok, 0) + COALESCE(c.out_tok, 0) AS w,
           SUM(COALESCE(c.in_tok, 0) + COALESCE(c.out_tok, 0))
               OVER (PARTITION BY m.batch_trace_id, m.batch_span_id) AS w_total,
           COUNT(*) OVER (PARTITION BY m.batch_trace_id, m.batch_span_id) AS n_members
    FROM batch_members m
    JOIN batch_marks b ON b.trace_id = m.batch_trace_id AND b.span_id = m.batch_span_id
    JOIN request_spans c ON c.trace_id = m.req_trace_id AND c.span_id = m.req_span_id
),
share AS (
    SELECT req_trace_id, req_span_id,
           SUM(CASE WHEN w_total > 0 THEN device_ns * w / w_total
                    ELSE device_ns / n_members END) AS device_ns,
           COUNT(*) AS batches,
           MAX(CASE WHEN profiled THEN 1 ELSE 0 END) > 0 AS profiled,
           MAX(CASE WHEN profiled_apart THEN 1 ELSE 0 END) > 0 AS profiled_apart
    FROM weighted
    GROUP BY req_trace_id, req_span_id
)
SELECT c.trace_id, c.span_id, c.request_model, c.route, c.model_tier, c.service_name,
       c.resource_id,
       CASE WHEN p.span_id IS NOT NULL THEN p.start_ns ELSE c.start_ns END AS arrival_ns,
       CASE WHEN p.span_id IS NOT NULL THEN p.end_ns ELSE c.end_ns END AS end_ns,
       CASE WHEN p.span_id IS NOT NULL THEN p.duration_ns ELSE c.duration_ns END AS latency_ns,
       c.duration_ns AS model_ns,
       c.ttft_ns, c.tpot_ns, c.queue_ns, c.in_tok AS input_tokens, c.out_tok AS output_tokens,
       c.cache_hit, c.prompt_fp, c.prompt_simhash, c.fp_key_id, c.error_type, c.status_code,
       c.stream,
       CAST(COALESCE(sh.device_ns, c.own_device_ns) AS BIGINT) AS device_ns,
       COALESCE(sh.batches, 0) AS batches,
       p.span_id IS NOT NULL AS enclosed,
       COALESCE(sh.profiled, FALSE) AS profiled,
       COALESCE(sh.profiled_apart, FALSE) AS profiled_apart
FROM request_spans c
LEFT JOIN server p ON p.trace_id = c.trace_id AND p.span_id = c.parent_span_id
LEFT JOIN share sh ON sh.req_trace_id = c.trace_id AND sh.req_span_id = c.span_id
"""

# A batch's device, as the view names it. A CPU call is the host's cores, never a CUDA index: its
# device id is ``'cpu'`` (keyed apart from the GPU at index 0 of its process) and it carries no
# GPU's hw.id. A non-CPU batch without hw.id (an SDK before 2026-12-04 in a process upgraded
# mid-window, a manual or foreign batch span with no device attributes beside the SDK's calls)
# takes the hw.id of its process and device id where that pair names exactly one: one GPU is
# one device, not ``GPU-...`` and ``scope/0`` at once. Two hw.ids on one pair: none is taken.
CPU_DEVICE_ID = "cpu"
BATCHES_VIEW_SQL = f"""
CREATE OR REPLACE VIEW batches AS
WITH own AS (
    SELECT b.span_id, b.trace_id, b.request_model, b.start_ns, b.end_ns, b.duration_ns,
           b.batch_size, b.batch_input_tokens, b.padded_tokens, b.batch_output_tokens,
           b.device_time_ns, b.device_type, b.resource_id, b.service_name, b.cpu_time_ns,
           b.h2d_bytes, b.d2h_bytes, b.copy_time_ns, b.pageable_bytes,
           b.gpu_util, b.gpu_energy_j, b.attributes, ({PROFILED_EXPR}) AS profiled,
           (SELECT COUNT(*) FROM links l
             WHERE l.trace_id = b.trace_id AND l.span_id = b.span_id) AS members,
           CASE WHEN b.device_type = 'cpu' THEN '{CPU_DEVICE_ID}'
                ELSE COALESCE({DEVICE_ID_EXPR}, '0') END AS device_id,
           CASE WHEN b.device_type = 'cpu' THEN NULL
                ELSE NULLIF({HW_ID_EXPR}, '') END AS own_hw_id
    FROM spans b
    WHERE b.role = '{semconv.ROLE_BATCH}'
),
named AS (
    SELECT o.*, {PROFILED_APART_SQL} AS profiled_apart,
           MIN(o.own_hw_id) OVER (PARTITION BY o.resource_id, o.device_id) AS hw_lo,
           MAX(o.own_hw_id) OVER (PARTITION BY o.resource_id, o.device_id) AS hw_hi
    FROM own o
)
SELECT b.span_id, b.trace_id, b.request_model, b.start_ns, b.end_ns, b.duration_ns,
       b.batch_size,
       b.batch_input_tokens AS input_tokens,
       b.padded_tokens,
       b.batch_output_tokens AS output_tokens,
       CAST(COALESCE(b.device_time_ns,
                     CASE WHEN b.device_type = 'cpu' THEN b.cpu_time_ns END,
                     b.duration_ns) AS BIGINT) AS device_ns,
       b.device_type,
       b.members,
       b.resource_id, b.service_name,
       b.device_id,
       COALESCE(b.own_hw_id, CASE WHEN b.hw_lo = b.hw_hi THEN b.hw_lo END) AS hw_id,
       b.cpu_time_ns, b.device_time_ns IS NOT NULL AS device_time_measured,
       b.h2d_bytes, b.d2h_bytes, b.copy_time_ns, b.pageable_bytes,
       b.gpu_util, b.gpu_energy_j, b.attributes, b.profiled, b.profiled_apart
FROM named b
"""

# In dependency order: each reads only the tables and the views before it.
VIEWS_SQL: tuple[str, ...] = (FOLDED_SPANS_VIEW_SQL, REQUEST_SPANS_VIEW_SQL,
                              BATCH_MEMBERS_VIEW_SQL, REQUESTS_VIEW_SQL, BATCHES_VIEW_SQL)


def create_views(con: Any) -> None:
    """Create (or replace) the views (``requests``, ``batches``, ``batch_members`` and the
    internal ``folded_spans`` and ``request_spans``) on an open DuckDB connection.

    Idempotent; needs the canonical tables to exist (schema.create_all_sql()).
    """
    for sql in VIEWS_SQL:
        con.execute(sql)


# The row-per-request and row-per-batch views, each column documented in docs/data-model.md
# (tests/test_docs.py); ALL_VIEW_NAMES adds the membership map and the internal folded and
# request spans.
VIEW_NAMES = ("requests", "batches")
ALL_VIEW_NAMES = ("folded_spans", "request_spans", "batch_members", "requests", "batches")


def materialize_views(con: Any) -> None:
    """Snapshot the views into TEMP tables of the same names, which shadow the views.

    An analysis run issues dozens of queries; evaluating the views' joins and window functions
    once instead of per query is what keeps a large input fast. Undo with :func:`drop_materialized`.
    """
    for sql in VIEWS_SQL:
        con.execute(sql.replace("CREATE OR REPLACE VIEW", "CREATE OR REPLACE TEMP TABLE", 1))


def drop_materialized(con: Any) -> None:
    for name in reversed(ALL_VIEW_NAMES):
        con.execute(f"DROP TABLE IF EXISTS temp.{name}")
