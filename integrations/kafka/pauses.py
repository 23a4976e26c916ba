"""When each paused partition resumes: the only state the timer service keeps, one entry per partition."""

from __future__ import annotations

import heapq
from collections.abc import Iterable

Partition = tuple[str, int]
"""A (topic, partition) pair."""


class PauseSchedule:
    """A heap of resume times with at most one live entry per partition.

    Holding a partition again replaces its resume time; the old heap entry goes stale and is skipped when it
    surfaces, so holding and releasing cost ``O(log n)`` with ``n`` the number of paused partitions.

    >>> pauses = PauseSchedule()
    >>> pauses.hold(("t", 0), 10.0); pauses.hold(("t", 1), 5.0)
    >>> pauses.next_time(), pauses.due(now=7.0), len(pauses)
    (5.0, [('t', 1)], 1)
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, Partition]] = []
        self._until: dict[Partition, float] = {}

    def __len__(self) -> int:
        return len(self._until)

    def __contains__(self, partition: object) -> bool:
        return partition in self._until

    def hold(self, partition: Partition, until: float) -> None:
        """Keep ``partition`` paused until ``until`` (replacing an earlier hold)."""
        self._until[partition] = until
        heapq.heappush(self._heap, (until, partition))
        if len(self._heap) > 4 * len(self._until) + 64:  # re-holds left many stale entries behind
            self._heap = [(time, held) for held, time in self._until.items()]
            heapq.heapify(self._heap)

    def release(self, partitions: Iterable[Partition]) -> None:
        """Forget ``partitions`` (revoked or lost): their stale heap entries are skipped later."""
        for partition in partitions:
            self._until.pop(partition, None)

    def due(self, now: float) -> list[Partition]:
        """Remove and return the partitions whose resume time is ``now`` or earlier."""
        ready: list[Partition] = []
        while self._heap and self._heap[0][0] <= now:
            time, partition = heapq.heappop(self._heap)
            if self._until.get(partition) == time:
                del self._until[partition]
                ready.append(partition)
        return ready

    def snapshot(self) -> dict[Partition, float]:
        """A copy of the held partitions and their resume times."""
        return dict(self._until)

    def next_time(self) -> float | None:
        """The earliest resume time, or None when no partition is held."""
        while self._heap and self._until.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None
