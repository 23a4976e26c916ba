"""The app of the timer benchmark's timer service: ``python -m durable_tasks timers -A benchmarks.timer_app``.

``benchmarks/timers.py`` starts that command once per measurement, configured from the environment:

``TIMER_BENCH_BROKER``
    Redis URL of the Celery broker: firing a sleep publishes an ``advance`` message there (no worker
    consumes it; the benchmark counts them to see how many timers fired).
``TIMER_BENCH_SETTINGS``
    JSON object of ``Durable`` settings: ``store``, ``schema``, ``timer_backend`` and, for Kafka,
    ``kafka_servers``, ``kafka_topic_prefix``, ``kafka_group_id``, ``kafka_consumer_options``, ``timer_grace``.
"""

from __future__ import annotations

import json
import os

from celery import Celery

from durable_tasks import Durable

app = Celery("timer-bench", broker=os.environ.get("TIMER_BENCH_BROKER", "redis://127.0.0.1:6379/14"))
app.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True)

durable = Durable(app, **json.loads(os.environ.get("TIMER_BENCH_SETTINGS", "{}")))
