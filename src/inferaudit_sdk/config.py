"""Every knob of the SDK in one frozen dataclass, read from the environment once.

Each field names its environment variable and default in its metadata. A bad environment value
warns and falls back to the default (never raises: this runs inside someone's server); a
wrongly-typed argument passed in code raises ``TypeError`` at configure time, which is the
developer's moment to hear about it. Only the ``INFERAUDIT_`` prefix is ours; standard
``OTEL_*`` variables keep their standard meaning and are read by the OpenTelemetry SDK itself,
except the GenAI content-capture switch, which is read here, and the batch processor's
``OTEL_BSP_*`` sizes and delay, read where the ``INFERAUDIT_`` variable of the same meaning is
not set.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from inferaudit_sdk import semconv

_logger = logging.getLogger("inferaudit_sdk")

MODE_PRODUCTION = "production"
MODE_AUDIT = "audit"
MODES = (MODE_PRODUCTION, MODE_AUDIT)
# Audit mode's profile sampling: 1 model call in this many runs under torch.profiler.
AUDIT_PROFILE_EVERY_N = 100

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
# Newer GenAI conventions accept a mode instead of a boolean. ``capture_content`` is about span
# attributes, and the SDK emits no GenAI events: "event_only" therefore puts no text on spans.
_CONTENT_MODES_ON = {"span_only", "span_and_event"}
_CONTENT_MODES_OFF = {"no_content", "event_only"}


def _env(name: str, default: Any, standard: str | None = None) -> dict[str, Any]:
    """Field metadata: our variable, its default, and the standard ``OTEL_*`` variable with the
    same meaning that is read when ours is not set."""
    return {"env_var": name, "default_value": default, "standard_env_var": standard}


@dataclass(frozen=True)
class AuditConfig:
    """SDK settings. Build with :meth:`from_env`; override single fields with ``replace``."""

    # Derived in __post_init__ (not a field): profile_every_n, else the mode's default.
    profile_interval: ClassVar[int]

    enabled: bool = field(default=True, metadata=_env("INFERAUDIT_ENABLED", True))
    capture_content: bool = field(
        default=False, metadata=_env(semconv.ENV_CAPTURE_MESSAGE_CONTENT, False)
    )
    content_max_chars: int = field(
        default=4096, metadata=_env("INFERAUDIT_CONTENT_MAX_CHARS", 4096)
    )
    # Key for prompt fingerprints; unset means a random per-process key (fingerprints are then
    # comparable only within one process; set a shared secret to dedupe across replicas).
    fingerprint_key: str | None = field(
        default=None, metadata=_env("INFERAUDIT_FINGERPRINT_KEY", None)
    )
    # Exporters used when the SDK builds its own TracerProvider. Comma list of
    # "file", "otlp", "console", "none". Unset: OTEL_TRACES_EXPORTER decides, else "file".
    exporters: tuple[str, ...] = field(
        default=(), metadata=_env("INFERAUDIT_EXPORTERS", ())
    )
    trace_dir: str = field(
        default="inferaudit-traces", metadata=_env("INFERAUDIT_TRACE_DIR", "inferaudit-traces")
    )
    file_max_bytes: int = field(
        default=64 * 1024 * 1024, metadata=_env("INFERAUDIT_FILE_MAX_BYTES", 64 * 1024 * 1024)
    )
    max_queue_size: int = field(
        default=65536, metadata=_env("INFERAUDIT_MAX_QUEUE_SIZE", 65536, "OTEL_BSP_MAX_QUEUE_SIZE")
    )
    # Spans per export call (one OTLP request / one line in the file sink).
    max_export_batch_size: int = field(
        default=512, metadata=_env("INFERAUDIT_MAX_EXPORT_BATCH_SIZE", 512,
                                  "OTEL_BSP_MAX_EXPORT_BATCH_SIZE")
    )
    # How long a span may wait in the queue before the worker exports it anyway.
    schedule_delay_ms: int = field(
        default=500, metadata=_env("INFERAUDIT_SCHEDULE_DELAY_MS", 500, "OTEL_BSP_SCHEDULE_DELAY")
    )
    # Backpressure for the local file sink only: when its queue is full the producing thread
    # waits up to this long for space before the span is dropped (and counted). 0 = never wait.
    # Network exporters never wait: they drop and count.
    file_block_ms: int = field(default=100, metadata=_env("INFERAUDIT_FILE_BLOCK_MS", 100))
    # "production" (the default) or "audit": an audit window turns on what production leaves
    # off by default (kernel-level profile sampling).
    mode: str = field(default=MODE_PRODUCTION, metadata=_env("INFERAUDIT_MODE", MODE_PRODUCTION))
    # 1 in N model calls runs under torch.profiler; 0 = off; unset: the mode's default
    # (``profile_interval`` holds the value in force).
    profile_every_n: int | None = field(
        default=None, metadata=_env("INFERAUDIT_PROFILE_EVERY_N", None)
    )
    nvml_enabled: bool = field(default=True, metadata=_env("INFERAUDIT_NVML", True))
    nvml_sample_hz: float = field(default=10.0, metadata=_env("INFERAUDIT_NVML_HZ", 10.0))
    instance_type: str | None = field(
        default=None, metadata=_env("INFERAUDIT_INSTANCE_TYPE", None)
    )
    price_usd_per_hour: float | None = field(
        default=None, metadata=_env("INFERAUDIT_PRICE_PER_HOUR", None)
    )

    def __post_init__(self) -> None:
        self._check_types()
        if self.mode not in MODES:
            raise ValueError(f"AuditConfig.mode must be one of {', '.join(MODES)}, got "
                             f"{self.mode!r}")
        if self.profile_every_n is not None and self.profile_every_n < 0:
            raise ValueError(f"AuditConfig.profile_every_n must be >= 0, got "
                             f"{self.profile_every_n}")
        # Resolved once here, read on every model call (a plain attribute, not a property).
        every = self.profile_every_n
        if every is None:
            every = AUDIT_PROFILE_EVERY_N if self.mode == MODE_AUDIT else 0
        object.__setattr__(self, "profile_interval", every)

    def _check_types(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.default is None:
                continue
            expected = _OPTIONAL_TYPES.get(f.name) or type(f.default)
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                continue
            if expected is int and isinstance(value, bool):
                raise TypeError(f"AuditConfig.{f.name} must be int, got bool")
            if not isinstance(value, expected):
                raise TypeError(
                    f"AuditConfig.{f.name} must be {expected.__name__}, got {type(value).__name__}"
                )

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: Any
    ) -> AuditConfig:
        """Read every field from the environment (bad values warn and default), then apply
        ``overrides`` given in code."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.metadata["env_var"]
            raw = env.get(name)
            standard = f.metadata["standard_env_var"]
            if raw is None and standard is not None:
                name, raw = standard, env.get(standard)
            if raw is None:
                continue
            parsed = _parse(f.name, name, raw, f.default)
            if parsed is not _INVALID:
                values[f.name] = parsed
        values.update(overrides)
        return cls(**values)


_INVALID = object()
# Fields whose default is None, and the type their value takes when set.
_OPTIONAL_TYPES: dict[str, type] = {
    "fingerprint_key": str,
    "instance_type": str,
    "price_usd_per_hour": float,
    "profile_every_n": int,
}


def _parse(field_name: str, env_var: str, raw: str, default: Any) -> Any:
    text = raw.strip()
    try:
        if field_name == "capture_content":
            low = text.lower()
            if low in _TRUE or low in _CONTENT_MODES_ON:
                return True
            if low in _FALSE or low in _CONTENT_MODES_OFF:
                return False
            raise ValueError(text)
        if isinstance(default, bool):
            low = text.lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError(text)
        if field_name == "mode":
            low = text.lower()
            if low in MODES:
                return low
            raise ValueError(text)
        if isinstance(default, int) or _OPTIONAL_TYPES.get(field_name) is int:
            value = int(text)
            if value < 0:
                raise ValueError(text)
            return value
        if isinstance(default, float):
            value = float(text)
            if value < 0:
                raise ValueError(text)
            return value
        if isinstance(default, tuple):
            return tuple(p.strip().lower() for p in text.split(",") if p.strip())
        if field_name == "price_usd_per_hour":
            value = float(text)
            if value < 0:
                raise ValueError(text)
            return value
        return text or None
    except ValueError:
        _logger.warning(
            "inferaudit: ignoring %s=%r (not a valid value); using the default %r",
            env_var, raw, default,
        )
        return _INVALID
