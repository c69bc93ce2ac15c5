"""The bounded queue between the receivers and the disk writer.

Receivers acknowledge a request once its line is in this queue, so the queue is where memory
could grow without bound; it is bounded by bytes instead. When it is full a receiver answers
429 (gRPC ``UNAVAILABLE``) with ``Retry-After`` and the sender retries later: backpressure
instead of a memory blow-up. When the writer reports the disk failing it answers 503 until a
write succeeds again.
"""

from __future__ import annotations

import threading
import time
from collections import deque

__all__ = ["BoundedBuffer"]

# One queued item: (signal, line). signal is "traces" or "metrics".
Item = tuple[str, bytes]


class BoundedBuffer:
    """FIFO of on-disk lines bounded by their total size in bytes. Thread-safe.

    ``has_room`` is the admission test (taken before decoding, so a full buffer costs no
    decode). ``put`` then succeeds unless the buffer was closed: it may overshoot the bound by
    the lines of requests admitted concurrently (at most one per receiver thread), so memory
    stays bounded by
    ``max_bytes + concurrency * max_line_bytes``.
    """

    def __init__(self, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"buffer max_bytes must be positive, got {max_bytes}")
        self.max_bytes = max_bytes
        self._items: deque[Item] = deque()
        self._used_bytes = 0
        self._cond = threading.Condition()
        self._closed = False
        self.sink_error: str = ""  # set by the writer while the disk is failing

    def has_room(self) -> bool:
        """True when a new request may be admitted (one huge request still enters when empty)."""
        return self._used_bytes < self.max_bytes and not self._closed

    def put(self, item: Item) -> bool:
        """Queue a line; False (nothing queued) once closed, so no ack can follow a close."""
        with self._cond:
            if self._closed:
                return False
            self._items.append(item)
            self._used_bytes += len(item[1])
            self._cond.notify()
            return True

    def take_all(self, timeout_s: float) -> list[Item]:
        """Everything queued now, waiting up to ``timeout_s`` for the first item."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._items and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)
            items = list(self._items)
            self._items.clear()
            return items

    def release(self, nbytes: int) -> None:
        """Give back room once lines are written (not before: they still occupy memory)."""
        with self._cond:
            self._used_bytes -= nbytes

    def requeue_front(self, items: list[Item]) -> None:
        """Put back lines a failed write could not store, ahead of newer ones (order kept)."""
        with self._cond:
            self._items.extendleft(reversed(items))
            self._cond.notify()

    def close(self) -> None:
        """Admit nothing more; ``take_all`` then returns what is left without waiting."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def empty(self) -> bool:
        with self._cond:
            return not self._items
