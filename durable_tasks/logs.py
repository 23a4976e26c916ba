"""Logging for background loops: full tracebacks, but not once per second while an outage lasts."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any


class RateLimitedLog:
    """Log a failure with its traceback at most once per ``every`` seconds for each key.

    A bug in the relay or the sweeper then shows up with its traceback instead of a one-line warning
    repeated forever, and a database outage does not flood the log. The next message after a quiet
    period says how many were suppressed.
    """

    def __init__(self, logger: logging.Logger, *, every: float = 60.0) -> None:
        self.logger = logger
        self.every = every
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def _should_log(self, key: str) -> int | None:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.every:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return None
            self._last[key] = now
            return self._suppressed.pop(key, 0)

    def exception(self, key: str, message: str, *args: Any, level: int = logging.ERROR) -> None:
        """Call inside an ``except`` block: logs ``message`` with the current traceback, rate-limited."""
        suppressed = self._should_log(key)
        if suppressed is None:
            return
        if suppressed:
            message += f" (and {suppressed} more time(s) since the last report)"
        self.logger.log(level, message, *args, exc_info=True)

    def message(self, key: str, message: str, *args: Any, level: int = logging.ERROR) -> None:
        """Log ``message`` without a traceback, rate-limited like :meth:`exception`."""
        suppressed = self._should_log(key)
        if suppressed is None:
            return
        if suppressed:
            message += f" (and {suppressed} more time(s) since the last report)"
        self.logger.log(level, message, *args)

    def recovered(self, key: str, message: str, *args: Any) -> None:
        """Say once that ``key`` works again, if it had failed."""
        with self._lock:
            had_failed = self._last.pop(key, None) is not None
            self._suppressed.pop(key, None)
        if had_failed:
            self.logger.warning(message, *args)
