"""Bearer-token check and the bind policy that goes with it.

Loopback is the default bind. A receiver reachable from other hosts without a token would let
anyone write into the audit's evidence, so a non-loopback bind needs ``--token`` (or the
``INFERAUDIT_COLLECT_TOKEN`` environment variable) unless the user says otherwise explicitly.
"""

from __future__ import annotations

import hmac
import ipaddress

__all__ = ["BindRefused", "TokenAuth", "check_bind", "is_loopback"]

TOKEN_ENV = "INFERAUDIT_COLLECT_TOKEN"


class BindRefused(ValueError):
    """A non-loopback bind without authentication, not explicitly allowed."""


class TokenAuth:
    """Checks ``Authorization: Bearer <token>`` in constant time. ``None`` token: no auth."""

    def __init__(self, token: str | None) -> None:
        self._expected = token.encode() if token else None

    @property
    def enabled(self) -> bool:
        return self._expected is not None

    def allows(self, authorization: str | bytes | None) -> bool:
        if self._expected is None:
            return True
        if authorization is None:
            return False
        got = authorization.encode() if isinstance(authorization, str) else authorization
        scheme, _, credentials = got.strip().partition(b" ")
        # RFC 7235 2.1: the scheme is case-insensitive; only the token is secret.
        ok_scheme = scheme.lower() == b"bearer"
        return hmac.compare_digest(credentials.strip(), self._expected) and ok_scheme


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name that may resolve anywhere


def check_bind(host: str, *, auth_enabled: bool, allow_insecure: bool) -> None:
    """Raise :class:`BindRefused` for a non-loopback bind without auth, unless allowed."""
    if is_loopback(host) or auth_enabled or allow_insecure:
        return
    raise BindRefused(
        f"refusing to listen on {host!r} without authentication: anyone who can reach it could "
        f"write into your traces. Pass --token (or set {TOKEN_ENV}), or --allow-insecure-bind "
        "if the network is already protected."
    )
