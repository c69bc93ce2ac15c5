"""Coverage: how much of the traffic the input shows, which scales every verdict's confidence.

Sources: spans the SDK dropped before export (its ``inferaudit.sdk.spans.dropped`` /
``.exported`` counters, read as ``ingest.coverage`` reads them: per exporter), spans it exported
that are not in the input (the exported counter against the spans read over the same interval,
``ingest.coverage.compare_exports``: lines lost to a cut, a torn file, a missing file), batch links
that point to request spans absent from the input (sampled out or lost), and requests without
token counts. Without an exported counter, unreadable lines stand in for the loss, each weighed
by the spans a readable line of its file holds (``ingest.coverage.unreadable_spans``): a line
carries up to 512 spans, so counting it as one span hid nearly all of a cut file's loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb

from inferaudit_analyzer import schema
from inferaudit_analyzer import thresholds as th
from inferaudit_analyzer.analyses._common import ratio, rounded
from inferaudit_analyzer.engines.base import engine_name
from inferaudit_analyzer.findings import Finding
from inferaudit_analyzer.ingest.coverage import (
    ExportCheck,
    busiest_exporter,
    compare_exports,
    counter_totals,
    unreadable_spans,
)
from inferaudit_sdk import semconv

LINKS_SQL = """
SELECT COUNT(*) AS links,
       COUNT(*) FILTER (WHERE r.span_id IS NULL) AS missing,
       COUNT(DISTINCT CASE WHEN r.span_id IS NULL THEN l.linked_span_id END) AS missing_requests
FROM links l
JOIN spans b ON b.trace_id = l.trace_id AND b.span_id = l.span_id AND b.role = ?
LEFT JOIN spans r ON r.trace_id = l.linked_trace_id AND r.span_id = l.linked_span_id
"""

COUNTS_SQL = """
SELECT (SELECT COUNT(*) FROM spans),
       (SELECT COUNT(*) FROM requests),
       (SELECT COUNT(*) FROM batches),
       (SELECT COUNT(*) FROM requests WHERE input_tokens IS NULL AND output_tokens IS NULL),
       (SELECT COUNT(*) FROM ingest_errors),
       -- the same request span read twice (a file and its compressed copy, a re-export):
       -- span ids are random 64-bit, so equal ids are copies
       (SELECT COUNT(*) - COUNT(DISTINCT span_id) FROM requests)
"""


@dataclass(frozen=True)
class Coverage:
    spans: int
    requests: int
    batches: int
    requests_without_tokens: int
    ingest_errors: int
    dropped_spans: int
    exported_spans: int
    sdk_errors: int
    links: int
    missing_links: int
    duplicate_requests: int = 0
    missing_requests: int = 0  # distinct requests a batch served whose span is not in the input
    duplicate_spans_dropped: int = 0  # copies of spans read twice, counted once (DuckDB store)
    export_check: ExportCheck | None = None  # spans read vs. exported over the same interval
    unreadable_spans: float | None = None  # spans the unreadable lines likely held (estimate)

    @property
    def drop_ratio(self) -> float | None:
        return ratio(self.dropped_spans, self.dropped_spans + self.exported_spans)

    @property
    def missing_link_ratio(self) -> float | None:
        return ratio(self.missing_links, self.links)

    @property
    def missing_exported_ratio(self) -> float | None:
        """Share of the spans the SDK exported (over the interval read) not in the input."""
        return None if self.export_check is None else self.export_check.missing_ratio

    @property
    def unreadable_ratio(self) -> float | None:
        """Estimated share of spans in unreadable lines. Without line counts, an error counts
        as one span."""
        lost = self.ingest_errors if self.unreadable_spans is None else self.unreadable_spans
        return ratio(lost, lost + self.spans)

    @property
    def ratio(self) -> float:
        """Share of the traffic we believe we see: the worst of the loss signals, 0-1. The
        exported counter (spans read over spans produced, both over the same interval) stands
        in for the drop ratio; unreadable lines still count, for the processes no counter
        covers (the worst is taken, so a loss both see is not counted twice)."""
        losses = [x for x in (self.unreadable_ratio, self.missing_link_ratio) if x is not None]
        c = self.export_check
        if c is not None:
            losses.append(1.0 - c.seen_ratio)
        elif self.drop_ratio is not None:
            losses.append(self.drop_ratio)
        return 1.0 - max(losses, default=0.0)

    def to_json(self) -> dict[str, Any]:
        return {
            "ratio": round(self.ratio, 4),
            "spans": self.spans,
            "requests": self.requests,
            "batches": self.batches,
            "requests_without_tokens": self.requests_without_tokens,
            "ingest_errors": self.ingest_errors,
            "dropped_spans": self.dropped_spans,
            "exported_spans": self.exported_spans,
            "drop_ratio": rounded(self.drop_ratio, 4),
            "sdk_errors": self.sdk_errors,
            "batch_links": self.links,
            "missing_link_ratio": rounded(self.missing_link_ratio, 4),
            "duplicate_requests": self.duplicate_requests,
            "duplicate_spans_dropped": self.duplicate_spans_dropped,
            "missing_requests": self.missing_requests,
            "missing_exported_ratio": rounded(self.missing_exported_ratio, 4),
            "export_check": None if self.export_check is None else {
                "exporter": self.export_check.exporter,
                "exported_spans": self.export_check.exported,
                "dropped_spans": self.export_check.dropped,
                "spans_read": self.export_check.spans_read,
            },
            "unreadable_spans_estimated": rounded(self.unreadable_spans, 1),
            "unreadable_ratio": rounded(self.unreadable_ratio, 4),
        }


# An empty input file loses no traffic; the store's ``inputs`` table (when present) says which
# files were empty, and their "empty file" errors are not counted as lost data.
EMPTY_FILE_ERRORS_SQL = """
SELECT COUNT(*) FROM ingest_errors e JOIN inputs i ON i.file = e.file WHERE i.size_bytes = 0
"""


# Copies of spans the DuckDB store dropped (store._drop_copies); the table exists only then
COPIES_DROPPED_SQL = f"SELECT dropped FROM {schema.SPAN_COPIES_TABLE}"


def _copies_dropped(con: Any) -> int:
    if engine_name(con) != "duckdb":
        return 0  # only the DuckDB store drops copies; elsewhere they stay (duplicate_requests)
    try:
        return int(con.execute(COPIES_DROPPED_SQL).fetchone()[0])
    except duckdb.CatalogException:  # no copies were read: the table is absent
        return 0


def _empty_file_errors(con: Any) -> int:
    try:
        return int(con.execute(EMPTY_FILE_ERRORS_SQL).fetchone()[0])
    except duckdb.Error:  # no inputs table (a fixture or foreign store): nothing to discount
        return 0


def analyze_coverage(con: Any) -> Coverage:
    spans, reqs, batches, no_tokens, errors, dups = con.execute(COUNTS_SQL).fetchone()
    errors = max(0, int(errors) - _empty_file_errors(con))

    exported_by = counter_totals(con, semconv.METRIC_SDK_SPANS_EXPORTED)
    dropped_by = counter_totals(con, semconv.METRIC_SDK_SPANS_DROPPED)
    check = compare_exports(con)
    # the exporter whose output was most likely read, else the one that saw most
    top = check.exporter if check is not None else busiest_exporter(exported_by, dropped_by)
    links, missing, missing_reqs = con.execute(LINKS_SQL, [semconv.ROLE_BATCH]).fetchone()
    return Coverage(
        spans=int(spans), requests=int(reqs), batches=int(batches),
        requests_without_tokens=int(no_tokens), ingest_errors=int(errors),
        dropped_spans=int(dropped_by.get(top or "", 0.0)),
        exported_spans=int(exported_by.get(top or "", 0.0)),
        sdk_errors=int(sum(counter_totals(con, semconv.METRIC_SDK_ERRORS).values())),
        links=int(links), missing_links=int(missing), duplicate_requests=int(dups or 0),
        missing_requests=int(missing_reqs or 0), duplicate_spans_dropped=_copies_dropped(con),
        export_check=check, unreadable_spans=unreadable_spans(con),
    )


def coverage_findings(c: Coverage) -> list[Finding]:
    out: list[Finding] = []
    if c.ratio < th.LOW_COVERAGE_RATIO:
        out.append(Finding(
            id="low_coverage",
            title="Part of the traffic is missing from the input; confidence is lowered",
            severity="high" if c.ratio < th.VERY_LOW_COVERAGE_RATIO else "medium",
            layer="coverage",
            evidence={
                "coverage_ratio": round(c.ratio, 4),
                "drop_ratio": rounded(c.drop_ratio, 4),
                "missing_exported_ratio": rounded(c.missing_exported_ratio, 4),
                "spans_read_compared": None if c.export_check is None
                else c.export_check.spans_read,
                "spans_exported_compared": None if c.export_check is None
                else c.export_check.exported,
                "missing_link_ratio": rounded(c.missing_link_ratio, 4),
                "ingest_errors": c.ingest_errors,
                "unreadable_ratio": rounded(c.unreadable_ratio, 4),
                "missing_requests": c.missing_requests,
                "threshold_ratio": th.LOW_COVERAGE_RATIO,
            },
            detail=("Spans dropped by the SDK, spans it exported that the input lacks (fewer "
                    "spans read than its exported counter says: cut or torn files, a missing "
                    "file), request spans sampled out (batch links to spans not in the input) "
                    "or unreadable lines. Raise the export queue, keep sampling "
                    "parent-based at 100 % for audited services, or add the missing files. Cost "
                    "per request divides the paid window by the requests in the input: with "
                    "missing_requests served but not seen, it is overstated by that share; "
                    "cost_per_request_served_usd counts them."),
        ))
    dup = _duplicate_finding(c)
    if dup is not None:
        out.append(dup)
    if c.requests and c.requests_without_tokens / c.requests >= 1 - th.LOW_COVERAGE_RATIO:
        out.append(Finding(
            id="missing_token_counts",
            title="Requests without token counts",
            severity="low",
            layer="coverage",
            evidence={"requests_without_tokens": c.requests_without_tokens,
                      "requests": c.requests},
            detail=("Without token counts, throughput in tokens/s, per-token cost and the "
                    "token-weighted device share fall back to per-request figures. Call "
                    "inferaudit_sdk.record(prompt_token_ids=..., output_token_ids=...)."),
        ))
    return out


def _duplicate_finding(c: Coverage) -> Finding | None:
    """Copies of one export read together: medium while copies remain in the data (they distort
    every count), low where the store counted each span once."""
    if c.duplicate_requests:
        title, severity = "The same request spans appear more than once in the input", "medium"
        evidence = {"duplicate_requests": c.duplicate_requests, "requests": c.requests,
                    "duplicate_spans_dropped": c.duplicate_spans_dropped}
        effect = ("request counts, throughput, cost per request and duplicate-prompt shares are "
                  "distorted. Analyse one copy.")
    elif c.duplicate_spans_dropped:
        title, severity = "Copies of the same spans were read; each was counted once", "low"
        evidence = {"duplicate_spans_dropped": c.duplicate_spans_dropped, "spans": c.spans,
                    "requests": c.requests}
        effect = ("span ids are random 64-bit, so these are copies: every span was counted once "
                  "and the numbers stand. Check the inputs are the ones meant.")
    else:
        return None
    return Finding(
        id="duplicate_spans", title=title, severity=severity, layer="coverage",
        evidence=evidence,
        detail=("Spans with the same trace and span id came from more than one file (e.g. a "
                ".jsonl and its .gz, or a collector writing to two places): " + effect),
    )
