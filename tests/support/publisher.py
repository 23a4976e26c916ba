"""A publisher that keeps the messages it is given: the engine runs without a broker, and the test delivers
each message by hand (to the step wrapper, the coordinator) or drops it, as a broker would."""

from __future__ import annotations

from collections.abc import Iterable

from durable_tasks.messages import Message, StepMessage, TaskMessage, TopicMessage
from durable_tasks.outgoing import Confirmation


class KeptMessages:
    """Keeps published messages; ``down`` makes publishing fail like a broker that is unreachable."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.down = False
        self.depths: dict[str, int | None] = {}  # none known: the relay re-sends whatever is overdue

    def publish(self, message: Message) -> None:
        if self.down:
            raise ConnectionError("broker down")
        self.messages.append(message)

    def queue_of(self, message: Message) -> str | None:
        return "celery"

    def queue_depths(self, queues: Iterable[str]) -> dict[str, int | None]:
        return {queue: self.depths.get(queue) for queue in queues}

    def steps(self) -> list[StepMessage]:
        return [message for message in self.messages if isinstance(message, StepMessage)]

    def own(self) -> list[TaskMessage]:
        """The user's own Celery task messages (``send_task``)."""
        return [message for message in self.messages if isinstance(message, TaskMessage)]

    def last_step(self) -> StepMessage:
        return self.steps()[-1]

    def take(self) -> list[Message]:
        taken, self.messages = self.messages, []
        return taken


class KeptRecords:
    """A Kafka producer stand-in: keeps each record with its confirmation, which the test gives by hand."""

    def __init__(self) -> None:
        self.records: list[tuple[TopicMessage, Confirmation]] = []
        self.down = False

    def produce(self, message: TopicMessage, on_confirmed: Confirmation) -> None:
        if self.down:
            raise BufferError("local queue full")
        self.records.append((message, on_confirmed))

    def confirm(self, error: BaseException | None = None) -> list[TopicMessage]:
        """Kafka answers every record produced so far; returns them."""
        answered, self.records = self.records, []
        for message, on_confirmed in answered:
            on_confirmed(message, error)
        return [message for message, _ in answered]

    def close(self, timeout: float = 10.0) -> None:
        return None
