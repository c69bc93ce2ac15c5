"""The one thread that moves acknowledged lines from the buffer to disk.

Durability contract (docs/collector.md states it for users):

- every line is handed to the OS as soon as the queue runs dry (or every 1 MiB), so a crash of
  this process loses only what is still queued in memory: under a disk that keeps up that is
  what arrived in the last ``flush_interval_s``, and never more than the buffer's bound;
- the files are fsynced every ``flush_interval_s`` (default 1 s), so an OS crash or power loss
  loses at most that interval;
- ``stop()`` (SIGINT/SIGTERM) drains the queue, fsyncs and closes: nothing acknowledged is lost.
"""

from __future__ import annotations

import logging
import threading
import time

from .buffer import BoundedBuffer, Item
from .sinks import Sink

__all__ = ["Writer"]

_log = logging.getLogger(__name__)
_OS_FLUSH_BYTES = 1024 * 1024
_RETRY_WRITE_S = 0.5


class Writer:
    """Drains ``buffer`` into ``sink``; owns the sink (only this thread touches it)."""

    def __init__(self, buffer: BoundedBuffer, sink: Sink, *, flush_interval_s: float = 1.0) -> None:
        if flush_interval_s <= 0:
            raise ValueError(f"flush_interval_s must be positive, got {flush_interval_s}")
        self._buffer = buffer
        self._sink = sink
        self._flush_interval_s = flush_interval_s
        self.lines_written = 0  # lines handed to the sink (minus any it had to give up)
        self.bytes_written = 0
        self.lines_lost = 0  # acknowledged lines that never reached the disk (stop gave up)
        self.failed = False  # stop() could not write, fsync and close everything
        self._flush_failed = False
        self._deadline: float | None = None  # set by stop(): keep retrying a failing disk till then
        self._thread = threading.Thread(target=self._loop, name="inferaudit-writer", daemon=True)
        self._thread.start()

    def _give_up_now(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _loop(self) -> None:
        next_fsync = time.monotonic() + self._flush_interval_s
        unflushed = 0
        dirty = False  # written since the last fsync (an idle receiver does not fsync)
        while True:
            items = self._buffer.take_all(timeout_s=max(0.0, next_fsync - time.monotonic()))
            if items:
                unflushed += self._write(items)
                dirty = True
            if self._buffer.closed:
                if self._buffer.empty() and self._close_sink():
                    return
                if self._give_up_now():
                    self._abandon()
                    return
                continue
            now = time.monotonic()
            if now >= next_fsync:
                self._flush(fsync=dirty)  # also rotates files past their age
                unflushed = 0
                dirty = False
                next_fsync = now + self._flush_interval_s
            elif unflushed and (unflushed >= _OS_FLUSH_BYTES or self._buffer.empty()):
                self._flush(fsync=False)
                unflushed = 0

    def _close_sink(self) -> bool:
        """Final flush + fsync + close; False (after a pause) when the disk refused it."""
        try:
            self._sink.close()
        except OSError as exc:
            self._buffer.sink_error = f"closing trace files failed: {exc}"
            _log.error("inferaudit collect: %s; retrying", self._buffer.sink_error)
            if not self._give_up_now():
                time.sleep(_RETRY_WRITE_S)
            return False
        return True

    def _abandon(self) -> None:
        """The stop deadline passed with the disk still failing: count what is lost."""
        self.failed = True
        left = self._buffer.take_all(timeout_s=0.0)
        lost_in_sink = lost_bytes = 0
        abandon = getattr(self._sink, "abandon", None)
        if abandon is not None:
            lost_in_sink, lost_bytes = abandon()
        # The sink had taken these lines (counted as written then); they never reached the disk.
        self.lines_written -= lost_in_sink
        self.bytes_written -= lost_bytes
        self.lines_lost = lost_in_sink + len(left)
        _log.error(
            "inferaudit collect: gave up at the stop deadline; %d acknowledged lines could not "
            "be written (%s)", self.lines_lost, self._buffer.sink_error or "disk failing",
        )

    def _write(self, items: list[Item]) -> int:
        done = 0
        nbytes = 0
        try:
            for signal, line in items:
                self._sink.write(signal, line)
                done += 1
                nbytes += len(line)
        except OSError as exc:
            self.lines_written += done
            self.bytes_written += nbytes
            # Disk full or gone: keep the lines (they were acknowledged) and tell receivers to
            # answer 503 until a write succeeds again.
            self._buffer.sink_error = f"writing trace files failed: {exc}"
            _log.error("inferaudit collect: %s; retrying", self._buffer.sink_error)
            self._buffer.requeue_front(items[done:])
            self._buffer.release(nbytes)
            if not self._give_up_now():
                time.sleep(_RETRY_WRITE_S)
            return nbytes
        self._buffer.sink_error = ""
        self._buffer.release(nbytes)
        self.lines_written += done
        self.bytes_written += nbytes
        return nbytes

    def _flush(self, *, fsync: bool) -> None:
        try:
            self._sink.flush(fsync=fsync)
        except OSError as exc:
            self._buffer.sink_error = f"flushing trace files failed: {exc}"
            _log.error("inferaudit collect: %s", self._buffer.sink_error)
            self._flush_failed = True
            return
        if self._flush_failed:  # a write error stays until a write succeeds
            self._flush_failed = False
            self._buffer.sink_error = ""

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Drain everything queued, fsync, close; retry a failing disk until ``timeout_s``.

        True only when every acknowledged line is on disk and the files closed."""
        self._deadline = time.monotonic() + max(0.0, timeout_s - 1.0)
        self._buffer.close()
        self._thread.join(timeout_s)
        return not self._thread.is_alive() and not self.failed
