"""Signed, expiring, single-use event tokens: what goes into an approval link.

A token names one run and one event name and carries its expiry and a random nonce, signed with
HMAC-SHA256 under the ``event_secret`` setting (stdlib :mod:`hmac`)::

    v1.<base64url JSON {"r": run id, "n": event name, "x": expires at, "j": nonce}>.<base64url signature>

It is signed, not encrypted: whoever holds it can read the run id and the event name, and nobody can make
or alter one without the secret. The event a token delivers gets the id ``token:<nonce>``, so a token
delivers at most one event; using it again is refused (:class:`~durable_tasks.EventTokenError`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from .errors import ConfigurationError, EventTokenError

VERSION = "v1"
_DOMAIN = b"durable-tasks event token "  # keeps these signatures apart from other uses of the same secret


@dataclass(frozen=True, slots=True)
class TokenClaims:
    """What a valid token says: deliver event ``name`` to run ``run_id`` once, before ``expires_at``."""

    run_id: str
    name: str
    expires_at: float
    nonce: str

    @property
    def event_id(self) -> str:
        """The id of the event the token delivers: a second use is a duplicate of the first."""
        return f"token:{self.nonce}"


def require_secret(secret: str | None) -> bytes:
    """The signing key, or a :class:`ConfigurationError` that says how to set it."""
    if not secret:
        raise ConfigurationError(
            "Event tokens need a secret to sign and check them, and none is set. Set it where you configure "
            "Durable, the same on every process that makes or checks tokens: Durable(app, event_secret=...) or "
            "app.conf.durable_event_secret = os.environ['DURABLE_EVENT_SECRET'] (for example a value of "
            "secrets.token_urlsafe(32), kept out of your code)."
        )
    return secret.encode()


def sign(secret: str | None, run_id: str, name: str, *, expires_at: float) -> str:
    """A token that delivers event ``name`` to run ``run_id`` once, until ``expires_at`` (epoch seconds)."""
    key = require_secret(secret)
    claims = {"r": run_id, "n": name, "x": round(expires_at, 3), "j": secrets.token_hex(16)}
    body = _encode(json.dumps(claims, separators=(",", ":")).encode())
    return f"{VERSION}.{body}.{_encode(_signature(key, body))}"


def verify(secret: str | None, token: str, *, now: float) -> TokenClaims:
    """The claims of ``token`` if it is well formed, signed with ``secret`` and not expired at ``now``.

    Raises :class:`EventTokenError` with ``reason`` ``malformed``, ``tampered`` or ``expired``; whether it
    was used already is for the caller to check (the journal knows).
    """
    key = require_secret(secret)
    shown = _shown(token)
    parts = token.split(".") if isinstance(token, str) else []
    if len(parts) != 3 or parts[0] != VERSION:
        raise EventTokenError(
            f"The event token {shown} is malformed: durable.event_token makes tokens of the form "
            f"'{VERSION}.<claims>.<signature>'. Check that the whole token reached you (links get cut). "
            "Nothing was delivered.", reason="malformed")
    _, body, signature = parts
    try:
        given = _decode(signature)
    except (binascii.Error, ValueError):
        given = b""
    if not hmac.compare_digest(given, _signature(key, body)):
        raise EventTokenError(
            f"The event token {shown} was refused: its signature does not match, so it was altered or signed "
            "with another event_secret. Nothing was delivered.", reason="tampered")
    try:
        data = json.loads(_decode(body))
        claims = TokenClaims(str(data["r"]), str(data["n"]), float(data["x"]), str(data["j"]))
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:  # signed by us, so only if the format changed
        raise EventTokenError(f"The event token {shown} is malformed ({exc}). Nothing was delivered.",
                              reason="malformed") from exc
    if now >= claims.expires_at:
        raise EventTokenError(
            f"The event token for event {claims.name!r} of run {claims.run_id} expired at "
            f"{_utc(claims.expires_at)}. Nothing was delivered; make a new one with "
            "durable.event_token(run_id, name, ttl=...).", reason="expired")
    return claims


def used_error(claims: TokenClaims, used_at: float | None) -> EventTokenError:
    """The error for a token whose event was delivered (or kept) already."""
    when = f" at {_utc(used_at)}" if used_at else ""
    return EventTokenError(
        f"The event token for event {claims.name!r} of run {claims.run_id} was used already{when}; a token "
        "delivers one event. Nothing was delivered again.", reason="used")


def _signature(key: bytes, body: str) -> bytes:
    return hmac.new(key, _DOMAIN + body.encode(), hashlib.sha256).digest()


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _shown(token: object) -> str:
    """Enough of a token to recognise it in a message, not enough to use it."""
    if not isinstance(token, str):
        return f"of type {type(token).__name__}"
    return repr(token[:16] + "...") if len(token) > 16 else repr(token)


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
