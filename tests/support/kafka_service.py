"""A timer service process for crash tests: ``python -m tests.support.kafka_service CONFIG_JSON TABLE``.

Runs :meth:`KafkaTimerService.run` with a :class:`TimerTable` as its fire callback until SIGTERM (or SIGKILL).
``CONFIG_JSON`` holds :class:`KafkaTimerConfig` fields plus ``"assign"``.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from pathlib import Path

from durable_tasks.integrations.kafka import KafkaTimerConfig, KafkaTimerService
from tests.support.kafka import TimerTable


def main(config_json: str, table_path: str) -> None:
    options = json.loads(config_json)
    assign = bool(options.pop("assign", False))
    config = KafkaTimerConfig(**{**options, "tiers": tuple(options["tiers"])})
    table = TimerTable(Path(table_path))
    service = KafkaTimerService(config, lambda record: table.fire(record, "subprocess"), assign=assign)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        service.run(stop, timeout=0.2)
    finally:
        service.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
