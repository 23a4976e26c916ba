"""Timer records as they travel through the delay topics, and the pure rules that move them on.

A record carries its own clock readings (``due_at`` and ``enqueued_at``, absolute UNIX times) because brokers
may stamp records with the producer's time rather than their own. Every decision is computed from the
absolute ``due_at``, so forwarding a record through several tiers never adds up rounding or lag.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


@dataclass(frozen=True, slots=True)
class TimerRecord:
    """One durable timer on its way through the delay topics; the Kafka key is ``run_id``.

    ``enqueued_at`` is when the record entered its current tier: :meth:`KafkaTimerProducer.send` stamps it,
    so callers may leave it at 0. ``hops`` counts forwards from one tier to the next.

    >>> TimerRecord(timer_id=7, run_id="r-1", due_at=1_700_000_030.0).key
    b'r-1'
    """

    timer_id: int
    run_id: str
    due_at: float
    enqueued_at: float = 0.0
    hops: int = 0

    @property
    def key(self) -> bytes:
        """The Kafka record key: the run id, so one run's timers share a partition."""
        return self.run_id.encode()

    def encode(self) -> bytes:
        """The record value: compact JSON (floats round-trip exactly)."""
        return json.dumps(
            {"timer_id": self.timer_id, "run_id": self.run_id, "due_at": self.due_at,
             "enqueued_at": self.enqueued_at, "hops": self.hops},
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, value: bytes | None) -> TimerRecord:
        """Parse a record value written by :meth:`encode`; unknown fields are ignored.

        Raises ``ValueError`` naming what is wrong when the value is not a timer record.
        """
        if value is None:
            raise ValueError("the record has no value")
        try:
            data: Any = json.loads(value)
            record = cls(timer_id=int(data["timer_id"]), run_id=str(data["run_id"]), due_at=float(data["due_at"]),
                         enqueued_at=float(data.get("enqueued_at", 0.0)), hops=int(data.get("hops", 0)))
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"not a timer record ({type(exc).__name__}: {exc}): {value[:120]!r}") from None
        return record


def choose_tier(remaining: float, tiers: Sequence[float]) -> float:
    """The largest tier not longer than ``remaining`` seconds; the smallest tier when none fits (or already due).

    ``tiers`` must be sorted ascending.

    >>> choose_tier(45, (1, 5, 30, 120)), choose_tier(0.2, (1, 5)), choose_tier(-3, (1, 5))
    (30, 1, 1)
    """
    return tiers[max(0, bisect.bisect_right(tiers, remaining) - 1)]


def ready_at(record: TimerRecord, tier: float) -> float:
    """When a record in ``tier`` must be looked at again: its tier's delay has passed, or it is due."""
    return min(record.enqueued_at + tier, record.due_at)


class Action(StrEnum):
    """What the service does with the record at the head of a partition."""

    FIRE = "fire"        # due: hand it to the fire callback
    FORWARD = "forward"  # its tier's delay passed but it is not due: produce it to the tier that fits now
    WAIT = "wait"        # not ready: seek back to it and pause the partition until ``Decision.at``


@dataclass(frozen=True, slots=True)
class Decision:
    """An :class:`Action` and, for ``WAIT``, the time the partition resumes."""

    action: Action
    at: float = 0.0


def decide(record: TimerRecord, tier: float, now: float) -> Decision:
    """What to do with ``record``, read from the topic of ``tier`` at ``now``. Nothing is ever fired early.

    >>> decide(TimerRecord(1, "r", due_at=100.0, enqueued_at=90.0), tier=5, now=94.0)
    Decision(action=<Action.WAIT: 'wait'>, at=95.0)
    >>> decide(TimerRecord(1, "r", due_at=100.0, enqueued_at=90.0), tier=5, now=95.0).action
    <Action.FORWARD: 'forward'>
    """
    if record.due_at <= now:
        return Decision(Action.FIRE)
    ready = ready_at(record, tier)
    if ready > now:
        return Decision(Action.WAIT, ready)
    return Decision(Action.FORWARD)
