"""``durable events``: send an outside event to a waiting run, by run id, correlation key or token.

Without ``-A`` the event is journaled and the run's ``advance`` waits in the outbox for a worker's relay
(within about a second), as for the other commands that change runs. A token (``--token``) is checked
with your ``Durable``'s ``event_secret``, so it needs ``-A``.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from .cli import _META, _context, _guarded, _journal_text, main, store_options
from .cli_console import neutralise, say
from .config import Settings
from .events import EventReceipt, EventSender
from .vocabulary import EventDelivery


def _json_payload(ctx: click.Context, param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(
            f"'{neutralise(value)}' is not JSON ({exc}); nothing was sent. Quote it for the shell, for "
            """example --payload '{"by": "ana"}', or --payload '"text"' for a string."""
        ) from None


@main.group()
@store_options
def events() -> None:
    """Send outside events to waiting runs (ctx.wait_for_event)."""


@events.command("send")
@click.argument("run_id", required=False, callback=_journal_text)
@click.option("-n", "--name", callback=_journal_text, help="The event's name, as the workflow waits for it.")
@click.option("--key", callback=_journal_text,
              help="Send to the run that waits on this correlation key (instead of RUN_ID).")
@click.option("--payload", callback=_json_payload, metavar="JSON", help="The event's payload as JSON (default null).")
@click.option("--event-id", "event_id", callback=_journal_text,
              help="Deliver at most once: sending the same id again changes nothing.")
@click.option("--token", help="A token from durable.event_token (it names the run and the event); needs -A.")
@store_options
@click.pass_context
def events_send(ctx: click.Context, run_id: str | None, name: str | None, key: str | None, payload: Any,
                event_id: str | None, token: str | None) -> None:
    """Send event NAME to RUN_ID (or to --key, or with --token): the waiting run continues with its payload.

    An event that no run waits for yet is kept, and the first matching wait takes it.
    """
    sender = _sender(ctx, needs_secret=token is not None)
    receipt = _guarded(lambda: sender.send(run_id, name, payload, key=key, event_id=event_id, token=token))
    say(describe(receipt))


def _sender(ctx: click.Context, *, needs_secret: bool) -> EventSender:
    app_spec = ctx.meta.get(_META + "app")
    if app_spec:
        from .cli_app import load_durable  # imports the user's project: only when asked to

        return load_durable(app_spec).events
    if needs_secret:
        raise click.UsageError("--token is checked with your Durable's event_secret: add -A APP (your Celery app "
                               "or Durable instance) so durable can read it.")
    context = _context(ctx)
    return EventSender(context.store, context.operations.unit_of_work, Settings(store=context.store.url))


def describe(receipt: EventReceipt) -> str:
    """One line saying what became of an event."""
    if receipt.outcome == EventDelivery.DELIVERED:
        return (f"Event {receipt.name!r} delivered to run {receipt.run_id}, step {receipt.step_key!r} "
                f"(event id {receipt.event_id}).")
    if receipt.outcome == EventDelivery.DUPLICATE:
        return f"Event id {receipt.event_id} was received before; nothing changed."
    target = f"run {receipt.run_id}" if receipt.run_id else f"key {receipt.key!r}"
    until = datetime.fromtimestamp(receipt.expires_at or 0).strftime("%Y-%m-%d %H:%M:%S")
    return (f"Event {receipt.name!r} kept for {target} until {until}: no wait takes it yet; the first wait for it "
            f"will (event id {receipt.event_id}).")
