"""Approval tokens: signed, expiring, single use; every refusal says why and delivers nothing."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from durable_tasks import ConfigurationError, Durable, EventDelivery, EventTokenError, InvalidStateError
from durable_tasks import tokens as token_module
from durable_tasks.store import event_queries

SECRET = "unit-test-secret-0123456789"


@pytest.fixture
def signed(tmp_path: Path) -> Any:
    app = Celery("tokens", broker="memory://", set_as_current=False)
    durable = Durable(app, store=f"sqlite:///{tmp_path / 'tokens.sqlite3'}", event_secret=SECRET)

    @durable.workflow(name="unit.approve")
    def approve(ctx: Any) -> Any:
        return ctx.wait_for_event("approved", "2 days")

    yield durable, approve
    durable.close()


def nothing_delivered(durable: Durable, run_id: str) -> bool:
    with durable.store.read() as conn:
        return not event_queries.list_signals(conn) and durable.run(run_id).status == "waiting"


def test_a_token_delivers_its_event_once(signed: Any) -> None:
    durable, approve = signed
    handle = approve.run()
    token = durable.event_token(handle.id, "approved", ttl="1 hour")
    receipt = durable.send_event(token=token, payload={"by": "ana"})
    assert receipt.outcome == EventDelivery.DELIVERED and receipt.run_id == handle.id
    assert receipt.event_id.startswith("token:")
    with pytest.raises(EventTokenError, match=r"was used already at \d{4}-.* UTC; a token delivers one event") as info:
        durable.send_event(token=token, payload={"by": "mallory"})
    assert info.value.reason == "used"
    assert handle.steps()[0].result == {"by": "ana"}


@pytest.mark.parametrize(("change", "reason"), [
    (lambda token: token[:-2] + ("AA" if token[-2:] != "AA" else "BB"), "tampered"),
    (lambda token: token.split(".")[0] + "." + token.split(".")[1][::-1] + "." + token.split(".")[2], "tampered"),
    (lambda token: token.rsplit(".", 1)[0], "malformed"),
    (lambda token: "v2" + token[2:], "malformed"),
    (lambda token: "", "malformed"),
])
def test_altered_and_cut_tokens_are_refused(signed: Any, change: Any, reason: str) -> None:
    durable, approve = signed
    handle = approve.run()
    token = durable.event_token(handle.id, "approved")
    with pytest.raises(EventTokenError, match="Nothing was delivered") as info:
        durable.send_event(token=change(token), payload="yes")
    assert info.value.reason == reason
    assert nothing_delivered(durable, handle.id)


def test_a_token_signed_with_another_secret_is_refused(signed: Any) -> None:
    durable, approve = signed
    handle = approve.run()
    forged = token_module.sign("another-secret-0123456789", handle.id, "approved", expires_at=time.time() + 60)
    with pytest.raises(EventTokenError, match="signature does not match") as info:
        durable.send_event(token=forged, payload="yes")
    assert info.value.reason == "tampered" and nothing_delivered(durable, handle.id)


def test_an_expired_token_is_refused(signed: Any) -> None:
    durable, approve = signed
    handle = approve.run()
    expired = token_module.sign(SECRET, handle.id, "approved", expires_at=time.time() - 1)
    with pytest.raises(EventTokenError, match=f"event 'approved' of run {handle.id} expired at .* UTC") as info:
        durable.send_event(token=expired, payload="yes")
    assert info.value.reason == "expired" and nothing_delivered(durable, handle.id)


def test_tokens_need_a_secret_and_a_valid_ttl(tmp_path: Path, signed: Any) -> None:
    app = Celery("nosecret", broker="memory://", set_as_current=False)
    durable = Durable(app, store=f"sqlite:///{tmp_path / 'nosecret.sqlite3'}")
    try:
        with pytest.raises(ConfigurationError, match="event_secret"):
            durable.event_token("any-run", "approved")
        with pytest.raises(ConfigurationError, match="event_secret"):
            durable.send_event(token="v1.a.b", payload=1)
    finally:
        durable.close()
    with pytest.raises(ConfigurationError, match="at least 16 random bytes"):
        Durable(Celery("short", broker="memory://", set_as_current=False), store="sqlite://", event_secret="short")
    signed_durable, approve = signed
    handle = approve.run()
    with pytest.raises(ConfigurationError, match="ttl must be longer than zero"):
        signed_durable.event_token(handle.id, "approved", ttl=0)
    with pytest.raises(ConfigurationError, match="Cannot read 'soon' as a duration"):
        signed_durable.event_token(handle.id, "approved", ttl="soon")


def test_a_token_names_its_event_and_its_run_must_still_take_events(signed: Any) -> None:
    durable, approve = signed
    handle = approve.run()
    token = durable.event_token(handle.id, "approved")
    with pytest.raises(ConfigurationError, match="This token is for event 'approved', not 'rejected'"):
        durable.send_event(name="rejected", token=token)
    with pytest.raises(ConfigurationError, match="takes no run_id, key or event_id"):
        durable.send_event(handle.id, token=token)
    durable.cancel(handle.id)
    with pytest.raises(InvalidStateError, match="is cancelled; a finished run takes no events"):
        durable.send_event(token=token, payload="too late")


def test_the_secret_is_not_in_the_settings_repr(signed: Any) -> None:
    durable, _ = signed
    assert SECRET not in repr(durable.settings)
