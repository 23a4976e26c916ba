"""This process as the journal knows it: a worker id, a heartbeat row, and the run leases it holds.

Every process that takes steps or advances runs (the worker, each prefork child) beats on its own, so a
``kill -9`` of any one of them shows as a stale heartbeat within ``worker_timeout`` and the sweeper
re-dispatches what it held. Beating starts with an explicit :meth:`ProcessIdentity.start`, which the
worker's services, the step wrapper and the coordinator call before they open a transaction (the first
beat is a write of its own, which would wait on the caller's write lock on SQLite).
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import threading
import time
from uuid import uuid4

from .logs import RateLimitedLog
from .store import health_queries, queries
from .store.database import Store
from .vocabulary import ProcessRole

logger = logging.getLogger("durable_tasks.heartbeat")
_beat_failures = RateLimitedLog(logger, every=60.0)


class ProcessIdentity:
    """The worker id of this process, kept alive by a heartbeat thread; renews held run leases.

    ``role`` says what the process is (``durable workers`` shows it): a client until the worker's services
    or the pool's process-init signal say otherwise.
    """

    def __init__(self, store: Store, *, interval: float, lease: float) -> None:
        self.role = ProcessRole.CLIENT
        self._store = store
        self._interval = interval
        self._lease = lease
        self._lock = threading.Lock()
        self._pid = 0
        self._worker_id = ""
        self._held: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        """Start beating in this process (once per process: a forked child starts its own); returns the id.

        Writes the first heartbeat before it returns, so the process is live at once.
        """
        if self._pid == os.getpid():
            return self._worker_id
        with self._lock:
            if self._pid != os.getpid():
                worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid4().hex[:6]}"
                self._held = set()
                self._stop = threading.Event()
                self._worker_id = worker_id
                self._pid = os.getpid()
                self.beat()
                self._thread = threading.Thread(target=self._run, args=(self._stop,), name="durable-heartbeat",
                                                daemon=True)
                self._thread.start()
                atexit.register(self.stop)
        return self._worker_id

    @property
    def worker_id(self) -> str:
        """``host:pid:nonce`` of this process; :meth:`start` must have been called in this process."""
        if self._pid != os.getpid():
            raise RuntimeError("ProcessIdentity.start() was not called in this process")
        return self._worker_id

    def rotate(self) -> None:
        """Take a new id at the next :meth:`start`: what the old one held looks dead to the sweeper."""
        with self._lock:
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
        with self._store.autocommit() as conn:
            health_queries.heartbeat(conn, self._worker_id, socket.gethostname(), os.getpid(), now, role=self.role,
                              interval=self._interval, timeout=self._lease)
            held = list(self._held)
            if held:
                queries.renew_leases(conn, self._worker_id, held, now + self._lease)

    def _run(self, stop: threading.Event) -> None:
        while not stop.wait(self._interval):
            try:
                self.beat()
                _beat_failures.recovered("beat", "Heartbeat of %s works again.", self._worker_id)
            except Exception:  # the database may be down; keep trying
                _beat_failures.exception("beat", "Heartbeat of %s failed; retrying every %.1fs.", self._worker_id,
                                         self._interval, level=logging.WARNING)

    def stop(self) -> None:
        """Stop beating and record a clean shutdown (``stopped`` in ``durable workers``)."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._pid != os.getpid():
            return
        try:
            with self._store.autocommit() as conn:
                health_queries.mark_stopped(conn, self._worker_id, time.time())
        except Exception:  # the database may be gone at exit; the heartbeat's age says it all then
            _beat_failures.exception("stop", "Could not record the stop of %s.", self._worker_id,
                                     level=logging.WARNING)
