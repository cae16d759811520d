"""The access log: one line per request (client, method, path, status, size, time, request id), written in batches.

The lines look like the server's other log lines (the same handler's format: time, level, worker, message) but do
not go through the logging machinery one by one: the format around the message is computed once a second, and the
lines are written a batch at a time (every BATCH_LINES lines, or BATCH_SECONDS after the first of a batch). At
thousands of requests a second, a log record, its filters and a write and flush per request cost more CPU than
routing the request (docs/performance.md). Errors and every other log line are written at once, as before.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from typing import TextIO

BATCH_LINES = 256
BATCH_SECONDS = 0.5
SENTINEL = "\x00message\x00"


class AccessLog:
    """Writes access lines in the server's log format, a batch at a time."""

    def __init__(self, handler: logging.Handler | None = None, stream: TextIO | None = None) -> None:
        self.handler = handler
        self.stream = stream or getattr(handler, "stream", None) or sys.stdout
        self.lines: list[str] = []
        self.timer: asyncio.TimerHandle | threading.Timer | None = None
        self.second = -1
        self.around = ("", "\n")

    def write(self, message: str) -> None:
        now = time.time()
        if int(now) != self.second:
            self.second, self.around = int(now), self.frame(now)
        self.lines.append(self.around[0] + message + self.around[1])
        if len(self.lines) >= BATCH_LINES:
            self.flush()
        elif self.timer is None:
            self.timer = later(self.flush)

    def frame(self, now: float) -> tuple[str, str]:
        """(what the handler's format puts before the message, and after it) for an INFO line at this second."""
        if self.handler is None:
            return "", "\n"
        record = logging.LogRecord("bentoml.access", logging.INFO, __file__, 0, SENTINEL, None, None)
        record.created = now
        if not self.handler.filter(record):  # the handler's filters add the fields its format names
            return "", "\n"
        before, _, after = self.handler.format(record).partition(SENTINEL)
        return before, after + getattr(self.handler, "terminator", "\n")

    def flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.lines:
            return
        text, self.lines = "".join(self.lines), []
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # the stream is gone (a closed pipe, the interpreter exiting): lines lost
            pass


def later(flush):
    """Call `flush` in BATCH_SECONDS: on the event loop when there is one, else from a timer thread."""
    try:
        return asyncio.get_running_loop().call_later(BATCH_SECONDS, flush)
    except RuntimeError:
        timer = threading.Timer(BATCH_SECONDS, flush)
        timer.daemon = True
        timer.start()
        return timer


def server_access_log() -> AccessLog:
    """An access log in the format of the server's own log handler (BentoML's, in a worker), flushed at exit."""
    import atexit

    handlers = [handler for handler in logging.getLogger("bentoml").handlers if isinstance(handler, logging.StreamHandler)]
    access = AccessLog(handlers[0] if handlers else None)
    atexit.register(access.flush)
    return access
