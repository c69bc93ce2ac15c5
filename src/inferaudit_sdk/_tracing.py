"""The SDK's tracer and meter, and a cheap "would this span be dropped?" test.

The tracer and meter come from the OpenTelemetry API's global proxies, so a function decorated
at import time binds to whatever provider ``configure()`` (or the application) installs later.

Fast path: the SDK's own ``start_span`` for a sampled-out span still generates ids, builds a
``SpanContext`` and calls the sampler (several µs). When the provider's sampler is a static
ALWAYS_OFF, or a ``ParentBased`` sampler whose delegate for the current parent is ALWAYS_OFF
(e.g. the parent span is not sampled under the default ``ParentBased(ALWAYS_ON)``), the
decision is known without calling it; :func:`would_drop` answers that from the sampler's
configuration and the current span's sampled flag, and the decorator then skips the span
entirely. Any other sampler (ratio, custom) is asked through ``start_span`` as usual.

Every audited span is started by :func:`start_span`: a :mod:`~inferaudit_sdk._lean_span` span
where :mod:`~inferaudit_sdk._lean_plan` finds it exact (the provider is the SDK's and nothing
in its pipeline reads spans as they start), else the tracer's own ``start_span``.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.trace import NoOpTracer, ProxyTracer

from inferaudit_sdk import _lean_plan, _lean_span, _settings, semconv
from inferaudit_sdk._version import VERSION

# Modes of a sampler as far as the fast path is concerned.
_ASK = 0  # must call start_span
_DROP = 1  # always drops
_PARENT = 2  # ParentBased: depends on the parent's sampled flag
_KEEP = 3  # always records and samples (ALWAYS_ON): the decision is known without asking

_tracer: Any = trace.get_tracer(semconv.INSTRUMENTATION_NAME, VERSION)
_meter: Any = metrics.get_meter(semconv.INSTRUMENTATION_NAME, VERSION)
# Cached classification of the tracer's sampler (None: compute on next use).
_plan: _Plan | None = None


def tracer() -> Any:
    """The tracer all audited spans come from."""
    return _tracer


def meter() -> Any:
    """The meter all audited metrics come from."""
    return _meter


def use_tracer_provider(provider: Any | None) -> None:
    """Take spans from ``provider`` instead of the global one (``None``: back to the global).

    For ``configure(tracer_provider=...)`` when the application keeps its own non-global
    provider, and for tests and benchmarks that compare providers in one process.
    """
    global _tracer, _plan
    if provider is None:
        _tracer = trace.get_tracer(semconv.INSTRUMENTATION_NAME, VERSION)
    else:
        _tracer = provider.get_tracer(semconv.INSTRUMENTATION_NAME, VERSION)
    _plan = None


def use_meter_provider(provider: Any | None) -> None:
    """Take instruments from ``provider`` (``None``: the global proxy). Drops cached instruments."""
    global _meter
    if provider is None:
        _meter = metrics.get_meter(semconv.INSTRUMENTATION_NAME, VERSION)
    else:
        _meter = provider.get_meter(semconv.INSTRUMENTATION_NAME, VERSION)
    from inferaudit_sdk import _metrics

    _metrics.reset()


_SAMPLING_MODULE = "opentelemetry.sdk.trace.sampling"


def _mode(sampler: Any) -> int:
    # Exact SDK classes only (a subclass may override should_sample); compared by name so
    # that importing this module does not import the SDK.
    cls = type(sampler)
    if cls.__module__ != _SAMPLING_MODULE:
        return _ASK
    if cls.__name__ == "StaticSampler":
        decision = getattr(sampler, "_decision", None)
        if decision is None:
            return _ASK
        if not decision.is_recording():
            return _DROP
        return _KEEP if decision.is_sampled() else _ASK  # RECORD_ONLY: the SDK decides
    if cls.__name__ == "ParentBased":
        return _PARENT
    return _ASK


class _Plan:
    """What the fast path needs to know, computed once per (tracer, config)."""

    __slots__ = ("config", "mode", "parents", "real", "sampler", "unbound_proxy")

    def __init__(self, config: Any, mode: int, parents: tuple[int, ...], unbound_proxy: Any,
                 real: Any) -> None:
        self.config = config
        self.mode = mode
        self.parents = parents
        # A proxy tracer not yet bound to a real provider: re-plan once it binds.
        self.unbound_proxy = unbound_proxy
        # The tracer spans come from (the proxy's, resolved) and the sampler it had: re-plan
        # if someone swaps the sampler.
        self.real = real
        self.sampler = getattr(real, "sampler", None)


_PARENT_FIELDS = (
    "_root",
    "_remote_parent_sampled",
    "_remote_parent_not_sampled",
    "_local_parent_sampled",
    "_local_parent_not_sampled",
)
_NO_PARENTS = (_ASK, _ASK, _ASK, _ASK, _ASK)


def _replan() -> _Plan:
    global _plan
    config = _settings.get_config()
    t = _tracer
    unbound = None
    if isinstance(t, ProxyTracer):
        # The proxy's own resolution property: the real tracer once a global provider is
        # set, a no-op tracer before that.
        real = t._tracer
        if isinstance(real, NoOpTracer):
            unbound = t
    else:
        real = t
    parents: tuple[int, ...] = _NO_PARENTS
    if not config.enabled or isinstance(real, NoOpTracer):
        mode = _DROP
    else:
        sampler = getattr(real, "sampler", None)
        mode = _mode(sampler) if sampler is not None else _ASK
        if mode == _PARENT:
            parents = tuple(_mode(getattr(sampler, name, None)) for name in _PARENT_FIELDS)
            if _PARENT in parents:
                mode = _ASK  # nested ParentBased: let the SDK decide
    plan = _plan = _Plan(config, mode, parents, unbound, real)
    return plan


def _current_plan() -> _Plan:
    plan = _plan
    if (
        plan is None
        or plan.config is not _settings._config
        or (plan.unbound_proxy is not None
            and not isinstance(plan.unbound_proxy._tracer, NoOpTracer))
        or getattr(plan.real, "sampler", None) is not plan.sampler
    ):
        plan = _replan()
    return plan


def _decision(plan: _Plan, ctx: Any) -> int:
    """``_DROP``, ``_KEEP`` or ``_ASK`` for a span whose parent span context is ``ctx``."""
    mode = plan.mode
    if mode != _PARENT:
        return mode
    parents = plan.parents
    if not ctx.is_valid:
        return parents[0]
    sampled = ctx.trace_flags.sampled
    if ctx.is_remote:
        return parents[1] if sampled else parents[2]
    return parents[3] if sampled else parents[4]


def would_drop() -> bool:
    """True only when a span started now is certain to be dropped (or the SDK is disabled)."""
    plan = _current_plan()
    mode = plan.mode
    if mode in (_ASK, _KEEP):
        return False
    if mode == _DROP:
        return True
    return _decision(plan, current_span().get_span_context()) == _DROP


def decide() -> tuple[_Plan, Any, int]:
    """``(plan, parent span context, decision)`` for a span started now, for a caller that
    skips its own work where ``decision == DROP`` and then starts the span with
    :func:`start_decided` (one read of the plan and the current span for both)."""
    plan = _current_plan()
    span = current_span()
    if span is _INVALID_SPAN:  # no span is current: a root, whose decision is fixed by plan
        return plan, _INVALID_CONTEXT, plan.parents[0] if plan.mode == _PARENT else plan.mode
    parent = span.get_span_context()
    return plan, parent, _decision(plan, parent)


def start_decided(plan: _Plan, parent: Any, decision: int, name: str, attributes: Any = None,
                  links: Any = ()) -> Any:
    """:func:`start_span` with what :func:`decide` returned just before, in the same context."""
    lean = _plan_lean(plan.real)
    if lean is None:
        return _tracer.start_span(name, attributes=attributes, links=links)
    return _start_lean(lean, name, attributes, links, parent, decision == _KEEP)


def start_span(name: str, attributes: Any = None, links: Any = ()) -> Any:
    """Start an audited span (not made current): what ``tracer().start_span(name,
    attributes=attributes, links=links)`` returns, built the lean way where that is exact.
    Where the sampler's answer is known from its configuration (ALWAYS_ON, or ParentBased
    choosing ALWAYS_ON for this parent) it is not asked."""
    plan, parent, decision = decide()
    return start_decided(plan, parent, decision, name, attributes, links)


DROP = _DROP
_INVALID_SPAN = trace.INVALID_SPAN
_INVALID_CONTEXT = trace.INVALID_SPAN_CONTEXT
_plan_lean = _lean_plan.plan_for
_start_lean = _lean_span.start_span


def _context_ops() -> tuple[Any, Any]:
    """``(attach, detach)`` for the OpenTelemetry runtime context.

    With the default ``ContextVarsRuntimeContext`` these are the bound ``set``/``reset`` of its
    ContextVar: exactly what ``context.attach``/``detach`` end up calling, minus two Python
    frames each, which matters once per streamed chunk. Any other runtime context (chosen
    with ``OTEL_PYTHON_CONTEXT``) goes through the public API.
    """
    var = _runtime_var()
    if var is not None:
        return var.set, var.reset
    return otel_context.attach, otel_context.detach


def _runtime_var() -> ContextVar[Any] | None:
    """The ContextVar behind the default ``ContextVarsRuntimeContext``; ``None`` for any other
    runtime context (chosen with ``OTEL_PYTHON_CONTEXT``)."""
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    if type(runtime).__name__ == "ContextVarsRuntimeContext" and isinstance(var, ContextVar):
        return var
    return None


attach, detach = _context_ops()


def put_back(token: Any) -> None:
    """Undo an :func:`attach` whose :func:`detach` raised ValueError because the attach ran in
    another Context (see ``_active.put_back``): the context goes back to the one it replaced.
    Only the default runtime context raises so (its tokens are ContextVar tokens)."""
    if not isinstance(token, Token):
        return
    old = token.old_value
    attach(otel_context.Context() if old is Token.MISSING else old)
# The current OpenTelemetry context (``context.get_current()``, a frame less by default).
get_context: Any = _runtime_var().get if _runtime_var() is not None else otel_context.get_current


def _span_ops() -> tuple[Any, Any]:
    """``(current_span, context_with_span)``: ``trace.get_current_span()`` and
    ``trace.set_span_in_context(span)``, read and built straight from the default runtime
    context's ContextVar as those do (four Python frames less each, on every model call);
    any other runtime context goes through the public API."""
    var = _runtime_var()
    key = getattr(trace.propagation, "_SPAN_KEY", None)
    if var is None or not isinstance(key, str):
        return trace.get_current_span, trace.set_span_in_context
    get = var.get
    span_type = trace.Span
    invalid = trace.INVALID_SPAN
    context_type = otel_context.Context

    def current_span() -> Any:
        span = get().get(key)
        return span if span is not None and isinstance(span, span_type) else invalid

    def context_with_span(span: Any) -> Any:
        values = get().copy()
        values[key] = span
        return context_type(values)

    return current_span, context_with_span


current_span, context_with_span = _span_ops()
