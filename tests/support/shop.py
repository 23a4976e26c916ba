"""A sample Celery app as a team has it: tasks, and calling code that starts chains the Celery way.

The only lines that name durable-tasks are the one-time declarations (``Durable(app)`` and ``@durable.step``);
:func:`place_order` is the calling code, never changed. Whether its chains are durable is configuration:
``app.conf.durable_chains``. Built from the same environment as :mod:`tests.support.app` (store, broker prefix,
executions file), by the test process and by ``celery -A tests.support.shop_worker worker``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from celery import Celery, chain
from celery.result import AsyncResult

from durable_tasks import Durable, current_step


@dataclass
class Shop:
    app: Celery
    durable: Durable
    tasks: dict[str, Any]

    def place_order(self, order_id: int) -> AsyncResult:
        """The calling code: reserve stock, charge the card (slow), ship."""
        t = self.tasks
        return chain(t["reserve"].s(order_id), t["charge"].s(), t["ship"].s()).delay()


def build(env: dict[str, str]) -> Shop:
    prefix = env.get("DT_PREFIX", "")
    app = Celery("shop", broker=env["DT_BROKER"], backend=env["DT_BROKER"], set_as_current=False)
    app.conf.update(
        broker_transport_options={"global_keyprefix": prefix},
        result_backend_transport_options={"global_keyprefix": prefix},
        worker_hijack_root_logger=False, broker_connection_retry_on_startup=True, worker_prefetch_multiplier=1,
        durable_chains=env.get("DT_CHAINS") == "1",
    )
    durable = Durable(app, store=env["DT_STORE"], schema=env.get("DT_SCHEMA") or None, auto_migrate=True,
                      **json.loads(env.get("DT_OPTIONS", "{}")))
    executions = env["DT_EXECUTIONS"]

    def record(label: str) -> None:
        step = current_step()
        with open(executions, "a") as out:
            out.write(json.dumps({"run": step.run_id if step else None, "step": step.step_key if step else None,
                                  "label": label, "pid": os.getpid(), "at": time.time()}) + "\n")

    @durable.step
    @app.task(name="shop.reserve", shared=False)
    def reserve(order_id: int) -> dict[str, Any]:
        record(f"reserve:{order_id}")
        return {"order": order_id, "reserved": True}

    @durable.step
    @app.task(name="shop.charge", shared=False)
    def charge(reservation: dict[str, Any]) -> dict[str, Any]:
        record(f"charge:{reservation['order']}")
        time.sleep(float(env.get("DT_CHARGE_SECONDS", "0.1")))
        return {**reservation, "charged": 42}

    @durable.step
    @app.task(name="shop.ship", shared=False)
    def ship(payment: dict[str, Any]) -> str:
        record(f"ship:{payment['order']}")
        return f"order {payment['order']} shipped, {payment['charged']} charged"

    return Shop(app, durable, {"reserve": reserve, "charge": charge, "ship": ship})
