"""The errors of the Kafka integration.

::

    durable_tasks.errors.DurableError
    ├── KafkaTimerError     Kafka refused or lost something the transport needed (a topic, a write, the cluster)
    └── KafkaMessageError   Kafka refused or could not take a record of the user's own (``ctx.publish``)
"""

from __future__ import annotations

from durable_tasks.errors import DurableError


class KafkaTimerError(DurableError):
    """Kafka could not carry a timer: a tier topic is missing, a write was refused, or the cluster is out of reach.

    The database still holds every timer, so nothing is lost for good: the reconciler fires what Kafka dropped.
    """


class KafkaMessageError(DurableError):
    """Kafka could not take a record of the user's own (``ctx.publish``): refused, or out of reach.

    The record's outbox row stays, so it is produced again with the same ``durable-message-id``.
    """
