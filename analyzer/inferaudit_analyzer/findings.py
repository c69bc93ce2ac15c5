"""The typed result every analysis returns: a finding with its evidence and the layer it indicts.

Analyses produce :class:`Finding` values; the bottleneck verdict, the roadmap and the renderers
consume them. Frozen, so a finding cannot be edited after the analysis that made it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["high", "medium", "low", "info"]
Layer = Literal["model", "runtime", "hardware", "coverage"]
SEVERITY_ORDER: dict[str, int] = {"high": 0, "medium": 1, "low": 2, "info": 3}


@dataclass(frozen=True)
class Finding:
    """One place where time or money goes, with the numbers that show it.

    Attributes:
        id: stable identifier, snake_case (e.g. ``unbatched_serving``); the roadmap keys on it.
        title: one line a reader understands without the evidence.
        severity: ``high`` | ``medium`` | ``low`` | ``info``.
        layer: the layer it points to: ``model`` | ``runtime`` | ``hardware`` | ``coverage``.
        evidence: the measured numbers, unit in each key (``_ns``, ``_ratio``, ``_usd``, ...).
        detail: a sentence or two on how it was measured and what it means.
        scope: what it applies to, e.g. ``{"model": "gpt2-tiny"}``; empty for the whole input.
    """

    id: str
    title: str
    severity: Severity
    layer: Layer
    evidence: dict[str, Any]
    detail: str = ""
    scope: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "severity": self.severity,
            "layer": self.layer,
            "evidence": dict(self.evidence),
            "detail": self.detail,
            "scope": dict(self.scope),
        }


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Most severe first, then by id for a stable order."""
    return sorted(findings, key=lambda f: (SEVERITY_ORDER.get(f.severity, 9), f.id))
