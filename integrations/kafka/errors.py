"""The error the Kafka timer transport raises.

::

    durable_tasks.errors.DurableError
    └── KafkaTimerError     Kafka refused or lost something the transport needed (a topic, a write, the cluster)
"""

from __future__ import annotations

from durable_tasks.errors import DurableError


class KafkaTimerError(DurableError):
    """Kafka could not carry a timer: a tier topic is missing, a write was refused, or the cluster is out of reach.

    The database still holds every timer, so nothing is lost for good: the reconciler fires what Kafka dropped.
    """
