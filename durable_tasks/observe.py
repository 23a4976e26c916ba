"""Committed state changes, as observers (events, metrics, traces) see them.

Every function of :mod:`durable_tasks.transitions` notes a :class:`Transition` in its unit of work; after
the transaction commits, the unit of work hands the batch to each registered :class:`Observer`. Observers
never see a change that rolled back, and they cannot break the change: an observer's error is logged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from .logs import RateLimitedLog

logger = logging.getLogger("durable_tasks.observe")
_observer_failures = RateLimitedLog(logger, every=60.0)


@dataclass(frozen=True, slots=True)
class Transition:
    """One committed change: ``subject`` is ``"run"`` or ``"step"``, ``status`` the new status.

    ``detail`` carries what an observer may want to show (``error``, ``due_at``, ``delay``, ``workflow``).
    """

    subject: str
    run_id: str
    status: str
    at: float
    position: int | None = None
    step_key: str | None = None
    kind: str | None = None
    attempt: int | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


class Observer(Protocol):
    """Receives the transitions of each commit, in order, in the process that committed them."""

    def on_committed(self, transitions: Sequence[Transition]) -> None: ...


@runtime_checkable
class RecoveryObserver(Protocol):
    """An observer that also counts what the worker's services recovered.

    ``kind`` is ``relay_republished`` (messages the broker lost, sent again), ``leases_broken`` (coordinators
    that died mid-advance) or ``stalled_runs`` (runs nothing would have moved); lost attempts are
    transitions of their own.
    """

    def on_recovered(self, kind: str, count: int) -> None: ...


def notify_recovered(observers: Sequence[Observer], kind: str, count: int) -> None:
    """Tell the observers that count recoveries; failures are logged, never raised."""
    for observer in observers:
        if isinstance(observer, RecoveryObserver):
            try:
                observer.on_recovered(kind, count)
            except Exception:
                _observer_failures.exception(f"observer {type(observer).__name__} failed",
                                             "Observer %s failed on a recovery count", type(observer).__name__)


def notify(observers: Sequence[Observer], transitions: Sequence[Transition]) -> None:
    """Hand committed transitions to every observer; an observer's failure is logged, never raised."""
    for observer in observers:
        try:
            observer.on_committed(transitions)
        except Exception:
            _observer_failures.exception(f"observer {type(observer).__name__} failed",
                                         "Observer %s failed on %d transition(s)", type(observer).__name__,
                                         len(transitions))
