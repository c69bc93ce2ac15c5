"""Routing opportunity: a distinct class of short requests served by the largest model.

Only *served* requests count: ones with token counts that neither failed (status ERROR or an
``error.type``) nor were cache hits. A failed request often has no output tokens (read as 0)
and a cache hit did not compute; neither is a request a smaller model could have answered.

Rule (stated in the finding): a served request is *short* when its input + output tokens are at
or below the p25 (``quantile_disc``) of served requests. The *largest* model is the one tagged
``inferaudit.model.tier = "large"`` if any, else the one with the most device time per token, else
the most wall time per token. "At or below the p25" always holds for at least a quarter of the
requests, even when they are all alike, so the finding also needs evidence that the short ones
are a class of their own and that moving them would pay:

* spread: the cutoff is at most ``ROUTING_SPREAD_RATIO`` of the mean tokens of the other served
  requests (every short request is at most half the size of an average other one; alike requests
  leave no others, or others barely longer);
* weight: the short requests on the largest model take at least ``ROUTING_MIN_TIME_SHARE`` of the
  device time (model wall time when no device time was recorded). That share bounds the saving:
  a model k times cheaper per token saves at most share x (1 - 1/k).

With more than one model, the finding is the share of served requests that are short and served by
the largest model (they could go to a smaller one already deployed). With one model it is an
opportunity that needs a smaller model to exist (severity ``info``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inferaudit_analyzer import thresholds as th
from inferaudit_analyzer.analyses._common import NO_MODEL, ratio, rounded
from inferaudit_analyzer.findings import Finding
from inferaudit_analyzer.views import ERRORED_SQL

TOKENS_EXPR = "(COALESCE(input_tokens, 0) + COALESCE(output_tokens, 0))"
HAS_TOKENS = "(input_tokens IS NOT NULL OR output_tokens IS NOT NULL)"
SERVED = f"({HAS_TOKENS} AND NOT {ERRORED_SQL} AND cache_hit IS NOT TRUE)"
MODEL_EXPR = f"COALESCE(request_model, '{NO_MODEL}')"

MODELS_SQL = f"""
SELECT {MODEL_EXPR} AS model,
       COUNT(*) AS n,
       MAX(CASE WHEN lower(model_tier) IN ('large', 'xl', 'largest') THEN 1 ELSE 0 END) AS large,
       SUM(COALESCE(device_ns, 0)) / NULLIF(SUM({TOKENS_EXPR}), 0) AS device_ns_per_token,
       SUM(model_ns) / NULLIF(SUM({TOKENS_EXPR}), 0) AS model_ns_per_token
FROM requests WHERE {SERVED}
GROUP BY model ORDER BY model
"""

CUTOFF_SQL = f"SELECT quantile_disc({TOKENS_EXPR}, ?) FROM requests WHERE {SERVED}"

EXCLUDED_SQL = f"""
SELECT COUNT(*) FILTER (WHERE {ERRORED_SQL}) AS failed,
       COUNT(*) FILTER (WHERE cache_hit IS TRUE AND NOT {ERRORED_SQL}) AS cache_hits
FROM requests WHERE {HAS_TOKENS}
"""

_SHORT = f"{TOKENS_EXPR} <= ?"
_SHORT_ON = f"{_SHORT} AND {MODEL_EXPR} = ?"
SHORT_SQL = f"""
SELECT COUNT(*) AS n,
       COUNT(*) FILTER (WHERE {_SHORT}) AS short,
       COUNT(*) FILTER (WHERE {_SHORT_ON}) AS short_on_largest,
       SUM(COALESCE(device_ns, 0)) AS device_ns,
       SUM(CASE WHEN {_SHORT_ON} THEN COALESCE(device_ns, 0) ELSE 0 END) AS short_largest_device_ns,
       SUM(COALESCE(model_ns, 0)) AS model_ns,
       SUM(CASE WHEN {_SHORT_ON} THEN COALESCE(model_ns, 0) ELSE 0 END) AS short_largest_model_ns,
       SUM(CASE WHEN {_SHORT} THEN 0 ELSE {TOKENS_EXPR} END) AS other_tokens
FROM requests WHERE {SERVED}
"""


@dataclass(frozen=True)
class Routing:
    models: tuple[str, ...]
    largest: str | None
    largest_rule: str
    cutoff_tokens: int | None
    requests: int  # served: with token counts, not failed, not a cache hit
    short: int
    short_on_largest: int
    device_ns: int
    short_largest_device_ns: int
    model_ns: int = 0
    short_largest_model_ns: int = 0
    other_tokens: int = 0  # input+output tokens of the served requests above the cutoff
    failed_excluded: int = 0
    cache_hits_excluded: int = 0

    @property
    def other_mean_tokens(self) -> float | None:
        """Mean input+output tokens of the served requests that are not short."""
        return ratio(self.other_tokens, self.requests - self.short)

    @property
    def time_basis(self) -> str:
        return "device" if self.device_ns > 0 else "model wall"

    @property
    def short_on_largest_time_ratio(self) -> float | None:
        """Share of the device time (model wall time without device time) that moving takes."""
        if self.device_ns > 0:
            return ratio(self.short_largest_device_ns, self.device_ns)
        return ratio(self.short_largest_model_ns, self.model_ns)

    @property
    def spread(self) -> bool:
        """Whether the short requests are a class of their own, not ties of alike requests."""
        other = self.other_mean_tokens
        return (self.cutoff_tokens is not None and other is not None
                and self.cutoff_tokens <= th.ROUTING_SPREAD_RATIO * other)

    def to_json(self) -> dict[str, Any]:
        return {
            "models": list(self.models),
            "largest_model": self.largest,
            "largest_rule": self.largest_rule,
            "short_rule": f"input+output tokens <= p{int(th.ROUTING_SHORT_QUANTILE * 100)} "
                          f"({self.cutoff_tokens} tokens) of served requests",
            "requests_served": self.requests,
            "failed_excluded": self.failed_excluded,
            "cache_hits_excluded": self.cache_hits_excluded,
            "short_ratio": ratio(self.short, self.requests),
            "short_on_largest_ratio": ratio(self.short_on_largest, self.requests),
            "short_on_largest_device_ratio": ratio(self.short_largest_device_ns, self.device_ns),
            "other_mean_tokens": rounded(self.other_mean_tokens, 2),
            "spread": self.spread,
        }


def analyze_routing(con: Any) -> Routing:
    models = con.execute(MODELS_SQL).fetchall()
    names = tuple(str(m[0]) for m in models)
    failed, hits = con.execute(EXCLUDED_SQL).fetchone()
    failed, hits = int(failed or 0), int(hits or 0)
    if not models:
        return Routing((), None, "", None, 0, 0, 0, 0, 0, failed_excluded=failed,
                       cache_hits_excluded=hits)
    tagged = [m for m in models if m[2]]
    if tagged:
        largest, rule = str(tagged[0][0]), "tagged inferaudit.model.tier = large"
    elif any(m[3] for m in models):
        largest = str(max(models, key=lambda m: m[3] or 0)[0])
        rule = "most device time per token"
    else:
        largest = str(max(models, key=lambda m: m[4] or 0)[0])
        rule = "most model wall time per token"
    cutoff = int(con.execute(CUTOFF_SQL, [th.ROUTING_SHORT_QUANTILE]).fetchone()[0])
    row = con.execute(SHORT_SQL, [cutoff, cutoff, largest, cutoff, largest, cutoff, largest,
                                  cutoff]).fetchone()
    n, short, short_on, dev, short_dev, wall, short_wall, other = (int(v or 0) for v in row)
    return Routing(names, largest, rule, cutoff, n, short, short_on, dev, short_dev,
                   model_ns=wall, short_largest_model_ns=short_wall, other_tokens=other,
                   failed_excluded=failed, cache_hits_excluded=hits)


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def routing_findings(r: Routing) -> list[Finding]:
    if r.requests < th.ROUTING_MIN_REQUESTS or r.largest is None:
        return []
    share = ratio(r.short_on_largest, r.requests) or 0.0
    time_share = r.short_on_largest_time_ratio
    if (share < th.ROUTING_SHARE_RATIO or not r.spread or time_share is None
            or time_share < th.ROUTING_MIN_TIME_SHARE):
        return []
    other = r.other_mean_tokens or 0.0
    dev_share = ratio(r.short_largest_device_ns, r.device_ns)
    rule = (f"short = input+output tokens <= {r.cutoff_tokens} (the p"
            f"{int(th.ROUTING_SHORT_QUANTILE * 100)} of served requests: not failed, not cache "
            f"hits); largest = {r.largest} ({r.largest_rule}); fires when the cutoff is <= "
            f"{th.ROUTING_SPREAD_RATIO:g} x the mean tokens of the other requests and the short "
            f"ones on the largest model take >= {th.ROUTING_MIN_TIME_SHARE:g} of the "
            f"{r.time_basis} time")
    evidence = {
        "short_on_largest_ratio": round(share, 4),
        "short_on_largest_requests": r.short_on_largest,
        "requests": r.requests,
        "short_on_largest_device_ratio": None if dev_share is None else round(dev_share, 4),
        "short_on_largest_time_ratio": round(time_share, 4),
        "time_basis": r.time_basis,
        "cutoff_tokens": r.cutoff_tokens,
        "other_mean_tokens": round(other, 2),
        "failed_excluded": r.failed_excluded,
        "cache_hits_excluded": r.cache_hits_excluded,
        "models": len(r.models),
        "rule": rule,
    }
    why = (f"{_pct(share)} of served requests are short (<= {r.cutoff_tokens} tokens, at most "
           f"{r.cutoff_tokens / other:.2f} of the {other:.0f}-token mean of the others) and run "
           f"on {r.largest}, taking {_pct(time_share)} of the {r.time_basis} time. A model k "
           f"times cheaper per token saves at most that share x (1 - 1/k), if its answers to "
           f"these requests are good enough: check quality on a sample first.")
    if len(r.models) > 1:
        return [Finding(
            id="routing_opportunity",
            title=f"Short requests are served by the largest model ({r.largest})",
            severity="medium", layer="model", evidence=evidence, scope={"model": r.largest},
            detail=f"Rule: {rule}. {why} A smaller model is already deployed.",
        )]
    return [Finding(
        id="routing_opportunity",
        title="Short requests could go to a smaller model (none is deployed)",
        severity="info", layer="model", evidence=evidence, scope={"model": r.largest},
        detail=(f"Rule: {rule}. {why} Only one model serves traffic, so this needs a smaller "
                "model deployed; the time share bounds what it could save."),
    )]
