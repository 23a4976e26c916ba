"""This process as the journal knows it: a worker id, a heartbeat row, and the run leases it holds.

Every process that takes steps or advances runs (the worker, each prefork child) beats on its own, from a
daemon thread started on first use, so a ``kill -9`` of any one of them shows as a stale heartbeat within
``worker_timeout`` and the sweeper re-dispatches what it held.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING
from uuid import uuid4

from .store import queries

if TYPE_CHECKING:
    from .store.database import Store

logger = logging.getLogger("durable_tasks.heartbeat")


class ProcessIdentity:
    """The worker id of this process, kept alive by a heartbeat thread; renews held run leases."""

    def __init__(self, store: Store, *, interval: float, lease: float) -> None:
        self._store = store
        self._interval = interval
        self._lease = lease
        self._lock = threading.Lock()
        self._pid = 0
        self._worker_id = ""
        self._held: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def worker_id(self) -> str:
        """``host:pid:nonce``; the first use in a process writes the first beat and starts the thread."""
        if self._pid != os.getpid():
            self._start()
        return self._worker_id

    def _start(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._worker_id = f"{socket.gethostname()}:{self._pid}:{uuid4().hex[:6]}"
            self._held = set()
            self._stop = threading.Event()
            self.beat()
            self._thread = threading.Thread(target=self._run, name="durable-heartbeat", daemon=True)
            self._thread.start()

    def rotate(self) -> None:
        """Take a new id: what the old one held looks dead and is recovered by the sweeper."""
        self._stop.set()
        self._pid = 0

    def hold(self, run_id: str) -> None:
        self._held.add(run_id)

    def release(self, run_id: str) -> None:
        self._held.discard(run_id)

    def holds(self, run_id: str) -> bool:
        """True while a coordinator in this process holds the run's lease."""
        return run_id in self._held

    def beat(self) -> None:
        now = time.time()
        with self._store.advisory() as conn:
            queries.heartbeat(conn, self._worker_id, socket.gethostname(), self._pid, now)
            held = list(self._held)
            if held:
                queries.renew_leases(conn, self._worker_id, held, now + self._lease)

    def _run(self) -> None:
        stop = self._stop
        while not stop.wait(self._interval):
            try:
                self.beat()
            except Exception as exc:  # the database may be down; keep trying
                logger.warning("Heartbeat of %s failed: %s", self._worker_id, exc)

    def stop(self) -> None:
        self._stop.set()
