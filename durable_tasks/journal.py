"""The journals of recently advanced runs, kept per process so an advance reads only what may have changed.

Every advance replays the workflow against the run's journal. Reading the whole journal each time costs
O(n) per step, so O(n²) per run of n steps. This process keeps the journals of the runs it advanced last
(:class:`JournalCache`), and the next advance of such a run reads, in the statement that locks the run row,
only the steps at and after :meth:`Journal.changeable_from`:

- every step that was unfinished here (``dispatched``, ``running``, ``retrying``, ``sleeping``, ``waiting``,
  ``cancelled``): claims, results, timers, events and the sweeper change only such steps;
- every step after the last one known here: another process advanced the run meanwhile.

A step that was finished here (``succeeded``, ``failed``) changes only when an operator restarts it
(``durable runs resume``, ``retry-step``); that transition bumps the run's ``wake_seq``
(:func:`durable_tasks.transitions.restart_step`), and a journal whose ``wake_seq`` is not the run row's is
read again in full. So is a journal this process has not kept.

An advance takes the run's journal out of the cache while it works and puts it back only after its commit
(:meth:`durable_tasks.outbox.UnitOfWork.after_commit`): a rolled-back advance leaves nothing behind. Any
committed snapshot is a valid starting point, whichever process wrote what since, because the rule above
reads everything that can differ from it.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

from .records import StepRow
from .vocabulary import StepStatus

SETTLED = frozenset({StepStatus.SUCCEEDED, StepStatus.FAILED})
"""Step statuses that only an operator's restart (which bumps ``wake_seq``) can change."""

DEFAULT_MAX_STEPS = 100_000
"""Steps kept across all cached journals of a process before the least recently advanced runs are dropped."""


class Journal:
    """The steps of one run as this process last committed or read them, with the run's ``wake_seq`` then.

    ``memo`` holds what a replay derives from the run's immutable input (a chain's layout, its decoded
    signatures), so later advances of the run skip that work; it lives as long as the journal.
    """

    __slots__ = ("end", "memo", "rows", "unsettled", "wake_seq")

    def __init__(self, wake_seq: int) -> None:
        self.rows: dict[int, StepRow] = {}
        self.wake_seq = wake_seq
        self.unsettled: set[int] = set()
        self.end = 0  # one past the highest known position
        self.memo: dict[str, Any] = {}

    def changeable_from(self) -> int:
        """The lowest position whose row another transition may have changed (or written) since."""
        return min(self.unsettled) if self.unsettled else self.end

    def merge(self, fresh: dict[int, StepRow], from_position: int) -> None:
        """Take the rows read at ``from_position`` and after; known rows there that were not read are gone."""
        for position in range(from_position, self.end):  # only the tail: a merge costs the same at step 1,000
            if position not in fresh and self.rows.pop(position, None) is not None:
                self.unsettled.discard(position)
        for row in fresh.values():
            self.record(row)
        if fresh:
            self.end = max(fresh) + 1
        else:  # the highest known position below the ones read (positions are dense: found at once)
            below = range(min(self.end, from_position) - 1, -1, -1)
            self.end = next((position + 1 for position in below if position in self.rows), 0)

    def record(self, row: StepRow) -> None:
        """A row read, or written by this advance's own transaction."""
        position = row.position
        self.rows[position] = row
        if row.status in SETTLED:
            self.unsettled.discard(position)
        else:
            self.unsettled.add(position)
        if position >= self.end:
            self.end = position + 1


class JournalCache:
    """The journals of the runs this process advanced last, in LRU order, bounded by their number of steps."""

    def __init__(self, max_steps: int = DEFAULT_MAX_STEPS) -> None:
        self.max_steps = max_steps
        self._entries: OrderedDict[str, Journal] = OrderedDict()
        self._steps = 0
        self._lock = threading.Lock()
        # A forked child (prefork pool) starts empty, with a lock nobody holds.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._entries = OrderedDict()
        self._steps = 0
        self._lock = threading.Lock()

    def take(self, run_id: str) -> Journal | None:
        """The run's journal, removed from the cache until :meth:`keep` puts it back; None if not kept."""
        with self._lock:
            journal = self._entries.pop(run_id, None)
            if journal is not None:
                self._steps -= len(journal.rows)
            return journal

    def keep(self, run_id: str, journal: Journal) -> None:
        """Keep ``journal`` (committed) for the run's next advance, dropping the least recent ones over the bound."""
        size = len(journal.rows)
        if size > self.max_steps:
            return
        with self._lock:
            previous = self._entries.pop(run_id, None)
            if previous is not None:
                self._steps -= len(previous.rows)
            self._entries[run_id] = journal
            self._steps += size
            while self._steps > self.max_steps:
                _, dropped = self._entries.popitem(last=False)
                self._steps -= len(dropped.rows)

    def forget(self, run_id: str) -> None:
        self.take(run_id)

    def __len__(self) -> int:
        return len(self._entries)
