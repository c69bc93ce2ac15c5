"""The active :class:`AuditConfig` for this process, and what is derived from it once.

``configure()`` calls :func:`set_config`; everything on the hot path calls :func:`get_config`,
which reads one module global (no lock: a config is frozen and swapping the reference is
atomic). Until ``configure()`` runs, the config comes lazily from the environment, so
``@audited`` code works (as a no-op-cheap auditor) before or without ``configure()``.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass

from inferaudit_sdk.config import AuditConfig

_lock = threading.Lock()
_config: AuditConfig | None = None
_derived: _Derived | None = None
# A random key per process for when no fingerprint key is configured: fingerprints are then
# comparable only within this process (the key id on the span says so).
_PROCESS_KEY = os.urandom(32)


@dataclass(frozen=True)
class _Derived:
    """Values computed from a config once, not per call."""

    config: AuditConfig
    fingerprint_key: bytes  # 16..64 bytes, BLAKE2b key
    fingerprint_key_id: str  # first 8 hex chars of BLAKE2b(key)


def get_config() -> AuditConfig:
    """The active config (built from the environment on first use if never set)."""
    cfg = _config
    if cfg is None:
        with _lock:
            cfg = _config
            if cfg is None:
                cfg = AuditConfig.from_env()
                _install(cfg)
    return cfg


def set_config(config: AuditConfig) -> None:
    """Make ``config`` the active one (called by ``configure()``; tests may call it too)."""
    if not isinstance(config, AuditConfig):
        raise TypeError(f"set_config needs an AuditConfig, got {type(config).__name__}")
    with _lock:
        _install(config)


def reset_for_tests() -> None:
    """Forget the active config, so the next :func:`get_config` re-reads the environment."""
    global _config, _derived
    with _lock:
        _config = None
        _derived = None


def derived() -> _Derived:
    """Key material and other values derived from the active config."""
    d = _derived
    if d is None or d.config is not _config:
        get_config()
        d = _derived
        assert d is not None
    return d


def _install(cfg: AuditConfig) -> None:
    global _config, _derived
    key = _key_bytes(cfg.fingerprint_key)
    key_id = hashlib.blake2b(key, digest_size=32).hexdigest()[:8]
    _derived = _Derived(cfg, key, key_id)
    _config = cfg


def _key_bytes(secret: str | None) -> bytes:
    """BLAKE2b keys are at most 64 bytes: longer secrets are hashed down to 64 bytes first."""
    if not secret:
        return _PROCESS_KEY
    raw = secret.encode("utf-8")
    return raw if len(raw) <= 64 else hashlib.blake2b(raw, digest_size=64).digest()
