"""``durable events send``: by run id, by key, with a token; what it prints and how it fails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from durable_tasks import Durable
from durable_tasks.cli import main
from durable_tasks.store import queries
from tests.support.publisher import KeptMessages


@pytest.fixture
def waiting(durable: Durable) -> Any:
    @durable.workflow(name="unit.cli_wait")
    def flow(ctx: Any, order: int) -> Any:
        return ctx.wait_for_event("approved", key=f"order-{order}")

    return flow


def invoke(durable: Durable, *args: str) -> Result:
    durable.store.ensure_ready()  # the tables exist, as after `durable db upgrade`
    return CliRunner().invoke(main, ["events", "send", *args, "--store", durable.store.url])


def test_send_to_a_run_id_delivers_and_leaves_the_advance_for_the_relay(durable: Durable, waiting: Any) -> None:
    handle = waiting.run(1)
    result = invoke(durable, handle.id, "--name", "approved", "--payload", '{"by": "ana"}', "--event-id", "e-1")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"Event 'approved' delivered to run {handle.id}, step 'approved' (event id e-1).\n"
    assert handle.steps()[0].result == {"by": "ana"}
    with durable.store.read() as conn:
        assert [row.run_id for row in queries.pending_outbox(conn, handle.id)] == [handle.id]
    again = invoke(durable, handle.id, "--name", "approved", "--event-id", "e-1")
    assert (again.exit_code, again.stdout) == (0, "Event id e-1 was received before; nothing changed.\n")


def test_send_to_a_key_keeps_an_event_nobody_waits_for_yet(durable: Durable, waiting: Any) -> None:
    result = invoke(durable, "--key", "order-2", "-n", "approved", "--payload", '"yes"')
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("Event 'approved' kept for key 'order-2' until ")
    assert waiting.run(2).result(timeout=1) == "yes"


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--name", "approved", "--payload", "{by: ana}"], 2, "'{by: ana}' is not JSON"),
    (["--name", "approved", "--token", "v1.x.y"], 2, "--token is checked with your Durable's event_secret"),
    (["--name", "approved"], 1, "error: send_event needs one address"),
])
def test_bad_input_exits_with_a_message_and_sends_nothing(
        durable: Durable, waiting: Any, args: list[str], code: int, message: str) -> None:
    handle = waiting.run(3)
    result = invoke(durable, *([handle.id] if code == 2 else []), *args)
    assert result.exit_code == code and message in result.output.replace("\n", " "), result.output
    assert handle.status == "waiting"


def test_unknown_run_is_an_error_on_stderr(durable: Durable) -> None:
    result = invoke(durable, "no-such-run", "--name", "approved")
    assert result.exit_code == 1 and "error: No run with id 'no-such-run'" in result.stderr


def test_a_token_with_the_app_of_a_durable_instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    module = tmp_path / "shop_events.py"
    store = json.dumps(f"sqlite:///{tmp_path / 'shop.sqlite3'}")
    module.write_text(
        "from celery import Celery\nfrom durable_tasks import Durable\n"
        "app = Celery('shop_events', broker='memory://', set_as_current=False)\n"
        f"durable = Durable(app, store={store}, event_secret='cli-test-secret-0123456789')\n"
        "@durable.workflow(name='shop.approve')\ndef approve(ctx):\n    return ctx.wait_for_event('approved')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import shop_events  # type: ignore[import-not-found]

    durable: Durable = shop_events.durable
    try:
        durable.runtime.publisher = KeptMessages()
        handle = shop_events.approve.run()
        token = durable.event_token(handle.id, "approved")
        runner = CliRunner()
        result = runner.invoke(main, ["events", "send", "--token", token, "--payload", "true", "-A",
                                      "shop_events:durable"])
        assert result.exit_code == 0 and "delivered to run" in result.stdout, result.output
        replay = runner.invoke(main, ["events", "send", "--token", token, "-A", "shop_events:durable"])
        assert replay.exit_code == 1 and "was used already" in replay.stderr
    finally:
        durable.close()
