"""The audited span that is active in the current context, shared by decorator and wrappers.

``@audited`` (a request span) and the batch/model-call wrappers (a batch span) push an
:class:`ActiveSpan` into a ``ContextVar`` while user code runs, so that ``record(...)`` and the
torch instrumentation can add to the right span without the user passing it around. Numbers
that accumulate over a span's life (device time, copy bytes) are summed here and written once,
just before the span ends; resolvers registered with :meth:`ActiveSpan.defer` run at that point
too (e.g. CUDA events recorded on the hot path, resolved later).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

from opentelemetry.trace import Span

from inferaudit_sdk._guard import guarded


class ActiveSpan:
    """One request or batch span plus what is being accumulated for it. Not thread-safe by
    itself: one ActiveSpan belongs to one logical task (thread or asyncio task)."""

    __slots__ = ("_deferred", "_totals", "attributes", "end_span", "recording", "role", "span")

    def __init__(self, span: Span, role: str, recording: bool) -> None:
        self.span = span
        self.role = role
        self.recording = recording
        # Ends the span in place of ``span.end()``, given the end time in ns (the profile
        # exporter ends a sampled call's span once its trace is written, off the call's path).
        self.end_span: Callable[[int], None] | None = None
        # Attributes set by record()/wrappers, written in one call at finish.
        self.attributes: dict[str, Any] = {}
        self._totals: dict[str, float] = {}
        self._deferred: list[Callable[[], dict[str, Any] | None]] = []

    def set(self, key: str, value: Any) -> None:
        """Set (overwrite) an attribute; written at finish."""
        if self.recording and value is not None:
            self.attributes[key] = value

    def add(self, key: str, amount: float) -> None:
        """Accumulate a numeric attribute (device time, bytes) over the span's life."""
        if self.recording:
            self._totals[key] = self._totals.get(key, 0) + amount

    def defer(self, resolver: Callable[[], dict[str, Any] | None]) -> None:
        """Run ``resolver`` at finish and merge the attributes it returns (numbers add)."""
        if self.recording:
            self._deferred.append(resolver)

    def flush_attributes(self) -> None:
        """Write everything accumulated to the span. Call once, just before ``span.end()``."""
        if not self.recording:
            return
        self.resolve_attributes()
        self.write_attributes()

    def resolve_attributes(self) -> None:
        """Run the resolvers and fold the totals into ``attributes`` (nothing written yet)."""
        deferred = self._deferred
        totals = self._totals
        attrs = self.attributes
        if deferred:
            for resolver in deferred:
                extra = guarded("active.defer", resolver)
                if extra:
                    for key, value in extra.items():
                        if isinstance(value, (int, float)) and not isinstance(value, bool):
                            totals[key] = totals.get(key, 0) + value
                        else:
                            attrs[key] = value
            deferred.clear()
        if not totals:
            return
        if _INT.issuperset(map(type, totals.values())):  # the usual case: counts and ns
            attrs.update(totals)
            return
        for key, total in tuple(totals.items()):
            if type(total) is not int and total.is_integer():
                total = int(total)  # a float sum of whole numbers reads as the count it is
            attrs[key] = total

    def write_attributes(self) -> None:
        """One atomic snapshot (a C-level dict copy) in one ``set_attributes`` call: a
        ``record()`` from another thread may still touch ``attributes`` meanwhile."""
        final = dict(self.attributes)
        if final:
            self.span.set_attributes(final)


_INT = frozenset((int,))
_CURRENT: ContextVar[ActiveSpan | None] = ContextVar("inferaudit_active_span", default=None)


# Bound methods, not wrappers: these run on every call and every streamed chunk.
# current(): the innermost audited span of this context, or None.
current = _CURRENT.get
push = _CURRENT.set
pop = _CURRENT.reset


def put_back(token: Token[ActiveSpan | None]) -> None:
    """Undo a :func:`push` whose :func:`pop` raised ValueError because the push ran in another
    Context: a ``with ia.batch()`` block kept open across a stream's yields, each step run by
    the server in a fresh ``copy_context()`` (Starlette's thread pool). The active span goes
    back to the one the push replaced, as a reset in one Context would leave it."""
    old = token.old_value
    _CURRENT.set(None if old is Token.MISSING else old)
