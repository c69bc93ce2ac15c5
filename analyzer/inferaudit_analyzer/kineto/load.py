"""Read a Kineto (Chrome-trace JSON) file one event at a time.

Why not ``json.load``: real traces reach hundreds of MB, mostly ``python_function`` events we
never use. :class:`TraceStream` decodes the top-level object incrementally (the stdlib's C
scanner on a sliding text buffer), yields each ``traceEvents`` item as it is decoded and keeps
only the small top-level values (``deviceProperties``, ``schemaVersion``, ...), so memory is
bounded by the buffer plus what the caller keeps.

Compression is detected from magic bytes, not the suffix: gzip (``1f 8b``) and zstd
(``28 b5 2f fd``); anything else is read as plain JSON. A truncated or corrupt file raises
:class:`KinetoTraceError` naming the file and the character offset in the decoded JSON.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from inferaudit_analyzer.ingest import files

__all__ = ["KinetoTraceError", "TraceStream", "open_binary"]

_CHUNK_BYTES = 1 << 20  # 1 MiB of compressed input per read
# No single trace event is this large; past it a value that will not decode is corrupt, and we
# stop instead of pulling the rest of the file into the buffer.
_MAX_VALUE_CHARS = 64 << 20
_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


class KinetoTraceError(ValueError):
    """A trace file is missing, truncated, corrupt or not a Kineto trace.

    The message names the file and, where known, the character offset in the decoded JSON;
    both are also attributes (``path``, ``position``), so callers need not parse the message.
    """

    def __init__(self, path: str | Path, what: str, position: int | None = None) -> None:
        where = f"{path}" if position is None else f"{path}: at character {position}"
        super().__init__(f"{where}: {what}")
        self.path = str(path)
        self.position = position


def open_binary(path: Path) -> BinaryIO:
    """Open ``path`` as a decompressed binary stream, choosing the codec by magic bytes."""
    try:
        return files.open_decompressed(path)
    except OSError as exc:
        raise KinetoTraceError(path, f"cannot open trace: {exc}") from exc


def _readable_chars(path: Path, step: int = 1024) -> int:
    """Characters that decompress from ``path`` before its stream breaks (to ``step`` bytes).

    Only called after a decompression error, so its second pass costs nothing on good files.
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    chars = 0
    try:
        with files.open_decompressed(path) as fh:
            while data := fh.read(step):
                chars += len(decoder.decode(data))
    except (*files.DECOMPRESS_ERRORS, OSError):
        pass
    return chars


class TraceStream:
    """Incremental reader of one Kineto trace file.

    Iterate :meth:`events` once; :attr:`metadata` holds the top-level keys other than
    ``traceEvents`` and is complete only after :meth:`events` is exhausted (Kineto writes some
    keys after the events). Not thread-safe; one pass only.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.metadata: dict[str, Any] = {}
        # items of ``traceEvents`` that are not objects (null, a number): not events, skipped
        # here and counted so the reader can say how many it lost
        self.non_objects = 0
        self._buf = ""
        self._pos = 0
        self._base = 0  # absolute char offset of self._buf[0]
        self._eof = False
        self._binary: BinaryIO | None = None
        self._text: Any = None
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._chunk = _CHUNK_BYTES

    # ----------------------------------------------------------------------------------------
    # buffer management
    def _fail(self, what: str) -> KinetoTraceError:
        return KinetoTraceError(self.path, what, self._base + self._pos)

    def _refill(self) -> bool:
        """Append more decoded text; False at end of input."""
        if self._eof:
            return False
        assert self._binary is not None
        try:
            data = self._binary.read(self._chunk)
        except files.DECOMPRESS_ERRORS as exc:
            # The failed read loses up to a whole chunk, so the decoded text so far may be all
            # of a small file's prefix or none of it: find where decoding really stops.
            where = max(self._base + len(self._buf), _readable_chars(self.path))
            raise KinetoTraceError(
                self.path, f"truncated or corrupt compressed stream: {exc}", where) from exc
        if self._pos:
            self._base += self._pos
            self._buf = self._buf[self._pos :]
            self._pos = 0
        if not data:
            self._eof = True
            self._buf += self._decoder.decode(b"", final=True)
            return False
        self._buf += self._decoder.decode(data)
        return True

    def _skip_ws(self) -> None:
        while True:
            self._pos = _WS.match(self._buf, self._pos).end()  # type: ignore[union-attr]
            if self._pos < len(self._buf) or not self._refill():
                return

    def _peek(self) -> str:
        self._skip_ws()
        if self._pos >= len(self._buf):
            raise self._fail("unexpected end of file (truncated trace?)")
        return self._buf[self._pos]

    def _expect(self, chars: str) -> str:
        ch = self._peek()
        if ch not in chars:
            raise self._fail(f"expected one of {chars!r}, found {ch!r}")
        self._pos += 1
        return ch

    def _value(self) -> Any:
        """Decode one JSON value at the cursor, reading more input until it is complete."""
        self._skip_ws()
        grown = 0
        while True:
            try:
                obj, end = _DECODER.raw_decode(self._buf, self._pos)
            except json.JSONDecodeError as exc:
                if not self._eof and len(self._buf) - self._pos < _MAX_VALUE_CHARS:
                    self._refill()  # may rebase the buffer: decode again for a true offset
                    grown += 1
                    if grown > 4:  # one huge value: read in bigger steps, stay O(n)
                        self._chunk *= 2
                    continue
                raise KinetoTraceError(self.path, f"invalid or truncated JSON: {exc.msg}",
                                       self._base + exc.pos) from exc
            # A number (or the value itself) ending exactly at the buffer end may continue
            # in the next chunk: read more and decode again.
            if end >= len(self._buf) and self._refill():
                continue
            self._pos = end
            return obj

    # ----------------------------------------------------------------------------------------
    def events(self) -> Iterator[dict[str, Any]]:
        """Yield each ``traceEvents`` item (a dict) in file order; non-dict items are skipped."""
        self._binary = open_binary(self.path)
        try:
            self._refill()
            if self._peek() != "{":
                raise self._fail("not a Kineto trace: top level is not a JSON object")
            self._pos += 1
            saw_events = False
            if self._peek() == "}":
                self._pos += 1
            else:
                while True:
                    key = self._value()
                    if not isinstance(key, str):
                        raise self._fail("expected an object key")
                    self._expect(":")
                    if key == "traceEvents":
                        saw_events = True
                        yield from self._event_array()
                    else:
                        self.metadata[key] = self._value()
                    if self._expect(",}") == "}":
                        break
            if not saw_events:
                raise KinetoTraceError(self.path, "not a Kineto trace: no 'traceEvents' key")
        finally:
            self._binary.close()

    def _event_array(self) -> Iterator[dict[str, Any]]:
        self._expect("[")
        if self._peek() == "]":
            self._pos += 1
            return
        while True:
            item = self._value()
            if isinstance(item, dict):
                yield item
            else:
                self.non_objects += 1
            if self._expect(",]") == "]":
                return


def read_all(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Convenience for tests and small traces: (metadata, all events) in memory."""
    stream = TraceStream(path)
    events = list(stream.events())
    return stream.metadata, events
