"""Routing opportunity: short requests served by the largest model.

Rule (stated in the finding): a request is *short* when its input + output tokens are at or below
the p25 (``quantile_disc``) of all requests with token counts. The *largest* model is the one
tagged ``inferaudit.model.tier = "large"`` if any, else the one with the most device time per
token, else the most wall time per token. With more than one model, the finding is the share of all
requests that are short and served by the largest model (they could go to a smaller one). With one
model, it reports the short share and the device time it takes as an opportunity that needs a
smaller model to exist (severity ``info``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inferaudit_analyzer import thresholds as th
from inferaudit_analyzer.analyses._common import ratio
from inferaudit_analyzer.findings import Finding

TOKENS_EXPR = "(COALESCE(input_tokens, 0) + COALESCE(output_tokens, 0))"
HAS_TOKENS = "(input_tokens IS NOT NULL OR output_tokens IS NOT NULL)"

MODELS_SQL = f"""
SELECT COALESCE(request_model, '(unknown)') AS model,
       COUNT(*) AS n,
       MAX(CASE WHEN lower(model_tier) IN ('large', 'xl', 'largest') THEN 1 ELSE 0 END) AS large,
       SUM(COALESCE(device_ns, 0)) / NULLIF(SUM({TOKENS_EXPR}), 0) AS device_ns_per_token,
       SUM(model_ns) / NULLIF(SUM({TOKENS_EXPR}), 0) AS model_ns_per_token
FROM requests WHERE {HAS_TOKENS}
GROUP BY model ORDER BY model
"""

CUTOFF_SQL = f"""
SELECT quantile_disc({TOKENS_EXPR}, ?) FROM requests WHERE {HAS_TOKENS}
"""

SHORT_SQL = f"""
SELECT COUNT(*) AS n,
       COUNT(*) FILTER (WHERE {TOKENS_EXPR} <= ?) AS short,
       COUNT(*) FILTER (WHERE {TOKENS_EXPR} <= ? AND COALESCE(request_model, '(unknown)') = ?)
           AS short_on_largest,
       SUM(COALESCE(device_ns, 0)) AS device_ns,
       SUM(CASE WHEN {TOKENS_EXPR} <= ? AND COALESCE(request_model, '(unknown)') = ?
                THEN COALESCE(device_ns, 0) ELSE 0 END) AS short_largest_device_ns
FROM requests WHERE {HAS_TOKENS}
"""


@dataclass(frozen=True)
class Routing:
    models: tuple[str, ...]
    largest: str | None
    largest_rule: str
    cutoff_tokens: int | None
    requests: int
    short: int
    short_on_largest: int
    device_ns: int
    short_largest_device_ns: int

    def to_json(self) -> dict[str, Any]:
        return {
            "models": list(self.models),
            "largest_model": self.largest,
            "largest_rule": self.largest_rule,
            "short_rule": f"input+output tokens <= p{int(th.ROUTING_SHORT_QUANTILE * 100)} "
                          f"({self.cutoff_tokens} tokens)",
            "short_ratio": ratio(self.short, self.requests),
            "short_on_largest_ratio": ratio(self.short_on_largest, self.requests),
            "short_on_largest_device_ratio": ratio(self.short_largest_device_ns, self.device_ns),
        }


def analyze_routing(con: Any) -> Routing:
    models = con.execute(MODELS_SQL).fetchall()
    names = tuple(str(m[0]) for m in models)
    if not models:
        return Routing((), None, "", None, 0, 0, 0, 0, 0)
    tagged = [m for m in models if m[2]]
    if tagged:
        largest, rule = str(tagged[0][0]), "tagged inferaudit.model.tier = large"
    elif any(m[3] for m in models):
        largest = str(max(models, key=lambda m: m[3] or 0)[0])
        rule = "most device time per token"
    else:
        largest = str(max(models, key=lambda m: m[4] or 0)[0])
        rule = "most model wall time per token"
    cutoff = con.execute(CUTOFF_SQL, [th.ROUTING_SHORT_QUANTILE]).fetchone()[0]
    cutoff = int(cutoff)
    row = con.execute(SHORT_SQL, [cutoff, cutoff, largest, cutoff, largest]).fetchone()
    return Routing(names, largest, rule, cutoff, int(row[0]), int(row[1]), int(row[2]),
                   int(row[3] or 0), int(row[4] or 0))


def routing_findings(r: Routing) -> list[Finding]:
    if r.requests < th.ROUTING_MIN_REQUESTS or r.largest is None:
        return []
    share = ratio(r.short_on_largest, r.requests) or 0.0
    dev_share = ratio(r.short_largest_device_ns, r.device_ns)
    rule = (f"short = input+output tokens <= {r.cutoff_tokens} (the p"
            f"{int(th.ROUTING_SHORT_QUANTILE * 100)} of all requests); largest = {r.largest} "
            f"({r.largest_rule})")
    evidence = {
        "short_on_largest_ratio": round(share, 4),
        "short_on_largest_requests": r.short_on_largest,
        "requests": r.requests,
        "short_on_largest_device_ratio": None if dev_share is None else round(dev_share, 4),
        "cutoff_tokens": r.cutoff_tokens,
        "models": len(r.models),
        "rule": rule,
    }
    if len(r.models) > 1:
        if share < th.ROUTING_SHARE_RATIO:
            return []
        return [Finding(
            id="routing_opportunity",
            title=f"Short requests are served by the largest model ({r.largest})",
            severity="medium", layer="model", evidence=evidence, scope={"model": r.largest},
            detail=(f"Rule: {rule}. These requests could be routed to a smaller model that is "
                    "already deployed; check quality on a sample first."),
        )]
    if share < th.ROUTING_SHARE_RATIO:
        return []
    return [Finding(
        id="routing_opportunity",
        title="Short requests could go to a smaller model (none is deployed)",
        severity="info", layer="model", evidence=evidence, scope={"model": r.largest},
        detail=(f"Rule: {rule}. Only one model serves traffic, so this is an opportunity that "
                "requires deploying a smaller model; the device share says what it could save."),
    )]
