"""Inline SVG charts generated in Python: no JavaScript, no fonts or files fetched.

Each chart is an ``<svg class="plot" data-plot="NAME">`` element with a ``<title>``, axes with
ticks, and its marks; the HTML test looks for those. Sizes are in SVG user units.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

W, H = 560, 300
ML, MR, MT, MB = 64, 16, 28, 44  # margins
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not math.isfinite(lo) or not math.isfinite(hi):
        return [0.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.floor(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 0.001:
        if t >= lo - step * 0.001:
            ticks.append(round(t, 12))
        t += step
    return ticks or [lo]


def fmt_num(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6 or a < 1e-3:
        return f"{v:.2g}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 1:
        return f"{v:.3g}"
    return f"{v:.3g}"


class Chart:
    """A 2-D chart frame with linear axes; add marks, then :meth:`svg`."""

    def __init__(self, name: str, title: str, x_label: str, y_label: str,
                 x_range: tuple[float, float], y_range: tuple[float, float],
                 x_ticks: Sequence[float] | None = None,
                 x_tick_labels: Sequence[str] | None = None) -> None:
        self.name, self.title = name, title
        self.x_label, self.y_label = x_label, y_label
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range
        if self.x1 <= self.x0:
            self.x1 = self.x0 + 1.0
        if self.y1 <= self.y0:
            self.y1 = self.y0 + 1.0
        self.x_ticks = list(x_ticks) if x_ticks is not None else _nice_ticks(self.x0, self.x1)
        self.x_tick_labels = list(x_tick_labels) if x_tick_labels is not None else None
        self.marks: list[str] = []
        self.legend: list[tuple[str, str]] = []

    def sx(self, x: float) -> float:
        return ML + (x - self.x0) / (self.x1 - self.x0) * (W - ML - MR)

    def sy(self, y: float) -> float:
        return H - MB - (y - self.y0) / (self.y1 - self.y0) * (H - MT - MB)

    def line(self, xs: Sequence[float], ys: Sequence[float], color: str, label: str | None = None,
             width: float = 2.0, dash: str | None = None) -> None:
        pts = " ".join(f"{self.sx(x):.1f},{self.sy(y):.1f}" for x, y in zip(xs, ys, strict=True)
                       if math.isfinite(x) and math.isfinite(y))
        if not pts:
            return
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.marks.append(f'<polyline class="mark" fill="none" stroke="{color}" '
                          f'stroke-width="{width}"{d} points="{pts}"/>')
        if label:
            self.legend.append((label, color))

    def points(self, xs: Sequence[float], ys: Sequence[float], color: str,
               label: str | None = None, r: float = 2.5) -> None:
        for x, y in zip(xs, ys, strict=True):
            if math.isfinite(x) and math.isfinite(y):
                self.marks.append(f'<circle class="mark" cx="{self.sx(x):.1f}" '
                                  f'cy="{self.sy(y):.1f}" r="{r}" fill="{color}" '
                                  'fill-opacity="0.55"/>')
        if label:
            self.legend.append((label, color))

    def bar(self, x_left: float, x_right: float, y_low: float, y_high: float, color: str,
            tip: str = "") -> None:
        x, w = self.sx(x_left), self.sx(x_right) - self.sx(x_left)
        top, bottom = self.sy(max(y_low, y_high)), self.sy(min(y_low, y_high))
        t = f"<title>{escape(tip)}</title>" if tip else ""
        self.marks.append(f'<rect class="mark" x="{x:.1f}" y="{top:.1f}" width="{max(w, 0.5):.1f}"'
                          f' height="{max(bottom - top, 0.5):.1f}" fill="{color}">{t}</rect>')

    def vline(self, x: float, color: str, label: str) -> None:
        if not (self.x0 <= x <= self.x1):
            return
        self.marks.append(f'<line class="mark" x1="{self.sx(x):.1f}" x2="{self.sx(x):.1f}" '
                          f'y1="{MT}" y2="{H - MB}" stroke="{color}" stroke-dasharray="4 3"/>')
        self.legend.append((label, color))

    def text(self, x: float, y: float, s: str, anchor: str = "middle") -> None:
        self.marks.append(f'<text x="{self.sx(x):.1f}" y="{self.sy(y) - 3:.1f}" font-size="10" '
                          f'text-anchor="{anchor}">{escape(s)}</text>')

    def svg(self) -> str:
        parts = [f'<svg class="plot" data-plot="{escape(self.name)}" xmlns="http://www.w3.org/2000'
                 f'/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img">',
                 f"<title>{escape(self.title)}</title>",
                 f'<text x="{W / 2}" y="16" font-size="13" text-anchor="middle" '
                 f'font-weight="bold">{escape(self.title)}</text>']
        # axes
        parts.append(f'<line x1="{ML}" y1="{H - MB}" x2="{W - MR}" y2="{H - MB}" stroke="#333"/>')
        parts.append(f'<line x1="{ML}" y1="{MT}" x2="{ML}" y2="{H - MB}" stroke="#333"/>')
        for i, t in enumerate(self.x_ticks):
            x = self.sx(t)
            label = self.x_tick_labels[i] if self.x_tick_labels else fmt_num(t)
            parts.append(f'<line x1="{x:.1f}" y1="{H - MB}" x2="{x:.1f}" y2="{H - MB + 4}" '
                         'stroke="#333"/>')
            parts.append(f'<text x="{x:.1f}" y="{H - MB + 16}" font-size="10" '
                         f'text-anchor="middle">{escape(label)}</text>')
        for t in _nice_ticks(self.y0, self.y1):
            y = self.sy(t)
            parts.append(f'<line x1="{ML - 4}" y1="{y:.1f}" x2="{W - MR}" y2="{y:.1f}" '
                         'stroke="#ddd"/>')
            parts.append(f'<text x="{ML - 6}" y="{y + 3:.1f}" font-size="10" '
                         f'text-anchor="end">{escape(fmt_num(t))}</text>')
        parts.append(f'<text x="{(ML + W - MR) / 2}" y="{H - 8}" font-size="11" '
                     f'text-anchor="middle">{escape(self.x_label)}</text>')
        parts.append(f'<text x="14" y="{(MT + H - MB) / 2}" font-size="11" text-anchor="middle" '
                     f'transform="rotate(-90 14 {(MT + H - MB) / 2})">{escape(self.y_label)}'
                     "</text>")
        parts += self.marks
        for i, (label, color) in enumerate(self.legend):
            y = MT + 6 + 14 * i
            parts.append(f'<rect x="{W - MR - 170}" y="{y - 8}" width="10" height="10" '
                         f'fill="{color}"/>')
            parts.append(f'<text x="{W - MR - 156}" y="{y + 1}" font-size="10">'
                         f"{escape(label)}</text>")
        parts.append("</svg>")
        return "".join(parts)


def empty(name: str, title: str, why: str) -> str:
    """A placeholder chart saying why there is nothing to plot (it still counts as present)."""
    return (f'<svg class="plot plot-empty" data-plot="{escape(name)}" xmlns="http://www.w3.org/'
            f'2000/svg" viewBox="0 0 {W} 60" width="{W}" height="60" role="img"><title>'
            f'{escape(title)}</title><text x="{W / 2}" y="34" font-size="12" '
            f'text-anchor="middle">{escape(title)}: {escape(why)}</text></svg>')
