"""A job's output as it runs: each line passed on, the last ones kept, read against a deadline.

One streamer for every kind of job (a local subprocess, a docker build, a container's
log). The reading happens on a helper thread, so the caller's thread keeps the clock:
when the deadline passes, ``follow`` returns even though the job is still writing (or
silent), and the caller stops the job and raises ``JobTimeoutError``.
"""

from __future__ import annotations

import codecs
import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable

from agir_retrain.tasks.errors import SubmitError

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 40
MAX_LINE_CHARS = 1 << 16
_END = object()


class JobTimeoutError(SubmitError):
    """A job ran past its deadline and was stopped."""

    def __init__(self, cmd: str, timeout_s: float, log_tail: str) -> None:
        super().__init__(cmd, None, log_tail)
        self.timeout_s = timeout_s
        self.args = (
            f"job {cmd!r} timed out: stopped after {timeout_s:g} s (submit.timeout_s); "
            f"last lines of its log:\n{log_tail}",
        )


class LogTail:
    """Split text or bytes into lines, pass each to ``on_line`` (else the log), keep the last ones."""

    def __init__(
        self, on_line: Callable[[str], None] | None = None, keep: int = LOG_TAIL_LINES
    ) -> None:
        self._emit = on_line or (lambda line: log.info("%s", line))
        self._lines: collections.deque[str] = collections.deque(maxlen=keep)
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def feed(self, chunk: str | bytes) -> None:
        """Take a piece of output; complete lines are passed on, a partial one waits."""
        text = self._decoder.decode(chunk) if isinstance(chunk, bytes) else chunk
        *lines, self._pending = (self._pending + text).split("\n")
        for line in lines:
            self.line(line)
        if len(self._pending) > MAX_LINE_CHARS:  # output with no newline is still bounded
            self.line(self._pending)
            self._pending = ""

    def line(self, line: str) -> None:
        """Take one whole line (a trailing newline or carriage return is dropped)."""
        line = line.rstrip("\r\n")
        self._lines.append(line)
        self._emit(line)

    def close(self) -> None:
        """Pass on what is left of a last line without a newline."""
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        if rest:
            self.line(rest)

    @property
    def text(self) -> str:
        """The last lines, joined."""
        return "\n".join(self._lines)


def follow(chunks: Iterable[str | bytes], tail: LogTail, deadline: float) -> bool:
    """Feed ``chunks`` into ``tail`` until they end (True) or ``time.monotonic()`` passes
    ``deadline`` (False; the reading thread is left to end with its source)."""
    pipe: queue.Queue[object] = queue.Queue(maxsize=1024)
    stopped = threading.Event()

    def put(item: object) -> None:
        while not stopped.is_set():  # once the caller has gone, output is dropped
            try:
                pipe.put(item, timeout=1.0)
                return
            except queue.Full:
                continue

    def read() -> None:
        try:
            for chunk in chunks:
                put(chunk)
        except Exception as error:  # noqa: BLE001 - a broken stream ends the log, not the job
            put(f"(log stream ended: {error})\n")
        finally:
            put(_END)

    threading.Thread(target=read, name="job-log", daemon=True).start()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            stopped.set()
            tail.close()
            return False
        try:
            item = pipe.get(timeout=min(left, 1.0))
        except queue.Empty:
            continue
        if item is _END:
            stopped.set()
            tail.close()
            return True
        tail.feed(item)  # type: ignore[arg-type]
