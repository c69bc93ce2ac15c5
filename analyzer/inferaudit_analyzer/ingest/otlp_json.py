"""OTLP/JSON export requests → rows of the canonical tables, in chunks.

The hot path of the analyzer: one pass over each span's attribute list, promoted values written
straight into a row list, the rest kept as a JSON object. No per-span validation up front: a span
of the wrong shape raises inside the fast path and is then diagnosed slowly (which field, what
type) and recorded as an ingest error, so good spans pay nothing for bad ones.

Accepts both the OTLP/JSON encoding (hex ids, enums as integers, 64-bit integers as strings)
and what generic protobuf JSON printers emit (base64 ids, enum names, numbers).
"""

from __future__ import annotations

import binascii
import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import msgspec
import orjson

from inferaudit_analyzer import schema
from inferaudit_analyzer.ingest import _otlp_types as T
from inferaudit_analyzer.ingest import foreign
from inferaudit_analyzer.ingest.otlp_diagnose import (
    AT_PATH,
    BAD_ATTRIBUTE,
    at_path,
    diagnose,
    span_label,
)
from inferaudit_analyzer.ingest.otlp_values import (
    attr_dict,
    dumps,
    dumps_bytes,
    norm_id,
    typed_value,
)
from inferaudit_sdk import semconv as sc

SPAN_COLS = [name for name, _ in schema.SPANS_COLUMNS]
_IDX = {name: i for i, name in enumerate(SPAN_COLS + list(foreign.SCRATCH))}
ROW_INDEX = _IDX  # column name -> position in a row; shared with the compiled path
N_SPAN = len(SPAN_COLS)
N_ROW = len(_IDX)

I_TRACE, I_SPAN, I_PARENT = _IDX["trace_id"], _IDX["span_id"], _IDX["parent_span_id"]
I_NAME, I_KIND, I_START, I_END, I_DUR = (
    _IDX["name"], _IDX["kind"], _IDX["start_ns"], _IDX["end_ns"], _IDX["duration_ns"])
I_STATUS, I_SERVICE, I_RES, I_SCOPE = (
    _IDX["status_code"], _IDX["service_name"], _IDX["resource_id"], _IDX["scope_name"])
I_ROLE, I_IN, I_OUT = _IDX["role"], _IDX["input_tokens"], _IDX["output_tokens"]
I_REQ_MODEL, I_RESP_MODEL = _IDX["request_model"], _IDX["response_model"]
I_TPOT, I_DECODE = _IDX["tpot_ns"], _IDX["decode_ns"]
I_COPY, I_H2D_T, I_D2H_T = (
    _IDX["copy_time_ns"], _IDX[foreign.SCRATCH_H2D_TIME], _IDX[foreign.SCRATCH_D2H_TIME])
I_PROFILE, I_SOURCE, I_ATTRS = _IDX["profile_path"], _IDX["source"], _IDX["attributes"]
I_SEQUENCES = tuple(_IDX[slot] for slot in foreign.SEQUENCE_COUNT_SLOTS)  # most exact first

_NATIVE = {foreign.to_str: str, foreign.to_int: int, foreign.to_float: float,
           foreign.to_bool: bool}
# key -> (row index, the Python type that needs no conversion, converter)
PRIMARY = {k: (_IDX[col], _NATIVE.get(conv), conv) for k, (col, conv) in foreign.PRIMARY.items()}
FALLBACK = {k: (_IDX.get(col, -1), conv, src) for k, (col, conv, src) in foreign.FALLBACK.items()}

_KIND_NAMES = {
    "SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3, "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5,
}
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
GENAI_PREFIXES = ("gen_ai.", "llm.")
_SPAN_ERRORS = (TypeError, ValueError, KeyError, AttributeError, binascii.Error,
                msgspec.ValidationError)
MAX_ERRORS = 1000  # per work unit; the rest are counted in one summary row
I64_MIN, I64_MAX = foreign.INT64_MIN, foreign.INT64_MAX

ErrorSink = Callable[[int | None, int | None, str], None]


def resource_id_of(attrs: dict[str, Any]) -> int:
    """Stable 63-bit id of a resource: equal in every file and process that saw it."""
    try:
        raw = orjson.dumps(attrs, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer beyond 64 bits: orjson refuses, the stdlib copes
        raw = json.dumps(attrs, sort_keys=True, default=str, separators=(",", ":")).encode()
    digest = hashlib.blake2b(raw, digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1


def derived_tpot(decode_ns: int, output_tokens: int | None, sequences: int) -> int | None:
    """TPOT of one sequence from a request's decode time, where the span gives none.

    ``output_tokens`` is the sum over the request's ``sequences`` (vLLM V0 with ``n`` > 1), which
    decoded in parallel: per sequence that is output / sequences tokens, the first of them from
    prefill, so TPOT = decode / (output / sequences - 1) = decode x sequences / (output -
    sequences); ``sequences`` is the first count >= 1 of ``foreign.SEQUENCE_COUNT_SLOTS``, else 1.
    No TPOT under two tokens a sequence on average: there the mean says little of the longest
    sequence, whose steps the decode time counts. The result is never larger than ``decode_ns``
    in magnitude, so it stays within int64.
    """
    if output_tokens is None or output_tokens < 2 * sequences:
        return None
    return decode_ns * sequences // (output_tokens - sequences)


class RowBuilder:
    """Accumulates canonical rows for one work unit; ``flush`` hands full chunks to a sink."""

    def __init__(self, file_path: str, on_spans: Callable[[RowBuilder], None],
                 chunk_spans: int = 65536) -> None:
        self.file_path = file_path
        self.base_dir = os.path.dirname(file_path)
        self.on_spans = on_spans
        self.chunk_spans = chunk_spans
        # one buffer per role: a row group of one role has the other roles' columns all NULL,
        # which Parquet stores in a few bytes and DuckDB's zone maps skip
        self.role_rows: dict[Any, list[tuple[Any, ...]]] = {}
        self.buffered = 0
        self.link_rows: list[tuple[Any, ...]] = []
        self.metric_rows: list[tuple[Any, ...]] = []
        self.resources: dict[int, tuple[Any, ...]] = {}
        self.errors: list[tuple[int | None, int | None, str]] = []
        self.errors_dropped = 0
        self.spans = 0
        self.lines_lost = 0  # lines that gave nothing: unreadable, not an export request, ...
        self.spans_lost = 0  # spans rejected one by one inside readable lines
        self.links = 0
        self.metric_points = 0
        self._res_cache: dict[bytes, tuple[int, str | None]] = {}
        self._res_json_cache: dict[bytes | None, tuple[int, str | None]] = {}
        self._line: int | None = None
        self._offset: int | None = None

    def take_span_chunks(self) -> list[list[tuple[Any, ...]]]:
        """The buffered span rows, one list per role, and empty the buffers."""
        chunks = [rows for rows in self.role_rows.values() if rows]
        self.role_rows = {}
        self.buffered = 0
        return chunks

    # -- errors -----------------------------------------------------------------------------
    def error(self, line: int | None, offset: int | None, message: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append((line, offset, message))
        else:
            self.errors_dropped += 1

    def lost_line(self, line: int | None, offset: int | None, message: str) -> None:
        """An error that cost a whole line (or a part of it of unknown size): counted apart so
        coverage can weigh it by the spans a line holds."""
        self.lines_lost += 1
        self.error(line, offset, message)

    def lost_span(self, line: int | None, offset: int | None, message: str) -> None:
        """An error that cost one span."""
        self.spans_lost += 1
        self.error(line, offset, message)

    # -- resources --------------------------------------------------------------------------
    def resource(self, res: Any) -> tuple[int, str | None]:
        """(resource_id, service.name) of a ``resource`` object, memoised per raw content (so
        a fault in it is reported once per work unit, on both paths). A resource or attribute
        list of the wrong JSON type is one error; its spans are kept, as a resource without
        attributes."""
        bad_res = res is not None and type(res) is not dict
        raw_attrs = None if bad_res else (res or {}).get("attributes") or []
        key = b"resource " + dumps_bytes(res) if bad_res else dumps_bytes(raw_attrs)
        hit = self._res_cache.get(key)
        if hit is not None:
            return hit
        if bad_res:
            self.error(self._line, self._offset,
                       f"resource must be an object, got {type(res).__name__}; read as a "
                       "resource without attributes, its spans kept")
            raw_attrs = []
        elif type(raw_attrs) is not list:
            self.error(self._line, self._offset,
                       f"resource attributes must be a list, got {type(raw_attrs).__name__}; "
                       "read as none, the resource's spans kept")
            raw_attrs = []
        attrs = attr_dict(raw_attrs, bad=lambda key, exc: self.error(
            self._line, self._offset, f"resource attribute {key}: {type(exc).__name__}: {exc}; "
            "the attribute is dropped, the resource's spans kept"))
        rid = resource_id_of(attrs)

        def num(k: str, conv: Callable[[Any], Any]) -> Any:
            v = attrs.get(k)
            try:
                return None if v is None else conv(v)
            except (TypeError, ValueError):
                return None

        service = attrs.get(sc.SERVICE_NAME)
        service = None if service is None else str(service)
        self.resources[rid] = (
            rid, service, num(sc.HOST_NAME, str), num(sc.HOST_TYPE, str),
            num(sc.HOST_CPU_MODEL_NAME, str), num(sc.RES_HOST_CPU_CORES, foreign.to_count),
            num(sc.RES_GPU_MODEL, str), num(sc.RES_GPU_COUNT, foreign.to_count),
            num(sc.RES_PRICE_USD_PER_HOUR, foreign.to_float), dumps(attrs),
        )
        self._res_cache[key] = (rid, service)
        return rid, service

    # -- spans ------------------------------------------------------------------------------
    def add_traces(self, obj: Any, line: int | None, offset: int | None) -> None:
        """Add every span of one traces request: a typed ``ExportRequest`` or a plain dict."""
        self._line, self._offset = line, offset
        if isinstance(obj, T.ExportRequest):
            self._add_typed(obj.resourceSpans or ())
            return
        rss = obj.get("resourceSpans")
        if type(rss) is not list:
            self.lost_line(line, offset,
                           f"resourceSpans must be a list, got {type(rss).__name__}")
            return
        for r, rs in enumerate(rss):
            if type(rs) is not dict:
                self.lost_line(line, offset, f"resourceSpans #{r} must be an object, got "
                                             f"{type(rs).__name__}")
                continue
            try:
                rid, service = self.resource(rs.get("resource"))
                # `or`, as the typed path: an empty scopeSpans beside the pre-1.0 name
                scope_spans = (rs.get("scopeSpans") or rs.get("instrumentationLibrarySpans")
                               or ())
                if type(scope_spans) not in (list, tuple):
                    key = "scopeSpans" if rs.get("scopeSpans") else "instrumentationLibrarySpans"
                    self.lost_line(line, offset, f"resourceSpans #{r}: {key} must be a list, "
                                                 f"got {type(scope_spans).__name__}")
                    continue
                for j, ss in enumerate(scope_spans):
                    if type(ss) is not dict:
                        self.lost_line(line, offset, f"resourceSpans #{r}: scopeSpans #{j} must "
                                                     f"be an object, got {type(ss).__name__}")
                        continue
                    scope = ss.get("scope") or ss.get("instrumentationLibrary") or {}
                    scope_name = self._scope_name(scope)
                    spans = ss.get("spans") or ()
                    if type(spans) not in (list, tuple):
                        self.lost_line(line, offset, f"resourceSpans #{r}: scopeSpans #{j}: "
                                                     "spans must be a list, got "
                                                     f"{type(spans).__name__}")
                        continue
                    for i, s in enumerate(spans):
                        try:
                            typed, notes = self._convert(s)
                            self._span(typed, rid, service, scope_name)
                        except _SPAN_ERRORS as exc:
                            self.lost_span(line, offset, f"span #{i}: {diagnose(s, exc)}")
                        else:
                            for note in notes:
                                self.error(line, offset, note)
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                self.lost_line(line, offset, f"malformed resourceSpans entry: {exc}")
            if self.buffered >= self.chunk_spans:
                self.on_spans(self)

    def _add_typed(self, rss: Any) -> None:
        for rs in rss:
            try:
                rid, service = self.resource(rs.resource)
                for ss in rs.scopeSpans or rs.instrumentationLibrarySpans or ():
                    scope = ss.scope or ss.instrumentationLibrary or {}
                    scope_name = self._scope_name(scope)
                    for i, s in enumerate(ss.spans or ()):
                        try:
                            self._span(s, rid, service, scope_name)
                        except _SPAN_ERRORS as exc:
                            self.lost_span(self._line, self._offset,
                                           f"span #{i}: {diagnose(msgspec.to_builtins(s), exc)}")
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                self.lost_line(self._line, self._offset, f"malformed resourceSpans entry: {exc}")
            if self.buffered >= self.chunk_spans:
                self.on_spans(self)

    def _convert(self, s: Any) -> tuple[T.Span, list[str]]:
        """A span object as the typed struct, and what was dropped to make it one. An
        attribute of the wrong shape (an ``intValue`` that is not an integer, a missing key,
        ...) is left out, with a note naming it: one bad value must not cost the span's other
        fields. The notes are recorded only if the span is then kept."""
        try:
            return msgspec.convert(s, T.Span, strict=T.STRICT), []
        except msgspec.ValidationError as exc:
            first = exc
        attrs = s.get("attributes") if type(s) is dict else None
        if type(attrs) is not list or not BAD_ATTRIBUTE.search(str(first)):
            raise first
        kept: list[Any] = []
        notes: list[str] = []
        for where, kv in enumerate(attrs):  # each on its own, once: linear in the list
            try:
                msgspec.convert(kv, T.KeyValue, strict=T.STRICT)
            except msgspec.ValidationError as exc:
                text = str(exc)
                m = AT_PATH.search(text)
                path = m.group(1).lstrip(".") if m else ""
                key = kv.get("key") if type(kv) is dict else None
                notes.append(
                    f"span {span_label(s)}: attribute "
                    f"{key if type(key) is str else f'#{where}'}: "
                    + (f"{path} {at_path(kv, path)!r}: " if path else "")
                    + f"{text[:m.start()] if m else text}".rstrip(" -")
                    + "; the attribute is dropped, the span kept")
            else:
                kept.append(kv)
        try:
            return msgspec.convert({**s, "attributes": kept}, T.Span, strict=T.STRICT), notes
        except msgspec.ValidationError:
            raise first from None

    def _scope_name(self, scope: dict[str, Any]) -> str | None:
        """The scope's name; one that is not a string is an error, and its spans are kept."""
        if type(scope) is not dict:
            self.error(self._line, self._offset,
                       f"scope must be an object, got {type(scope).__name__}; read as unnamed")
            return None
        name = scope.get("name")
        if name is None or type(name) is str:
            return name
        self.error(self._line, self._offset,
                   f"scope name must be a string, got {type(name).__name__}; read as unnamed")
        return None

    def _attr_error(self, span_id: str, key: str, exc: BaseException) -> None:
        self.error(self._line, self._offset, f"span {span_id}: attribute {key}: {exc}")

    @staticmethod
    def _foreign(row: list[Any], scope_name: str | None, dialect: str | None,
                 has_genai: bool) -> None:
        """Source and inferred role of a span without ``inferaudit.span.role``."""
        if not has_genai:
            has_genai = row[I_REQ_MODEL] is not None or row[I_IN] is not None
        source = foreign.source_of(scope_name, False, dialect, has_genai)
        row[I_SOURCE] = source
        if source != foreign.SOURCE_INFERAUDIT and (
                row[I_IN] is not None or row[I_OUT] is not None):
            row[I_ROLE] = sc.ROLE_REQUEST  # a foreign GenAI span with usage: a request
        if row[I_REQ_MODEL] is None and row[I_RESP_MODEL] is not None:
            row[I_REQ_MODEL] = row[I_RESP_MODEL]  # vLLM writes only the response model

    def _typed_attributes(self, row: list[Any], kvs: Any, span_id: str
                          ) -> tuple[bytes, bool, list[Any] | None]:
        """Typed ``KeyValue`` structs → promoted columns, leftover JSON, GenAI flag, fallbacks."""
        attrs: dict[str, Any] = {}
        fallbacks = None
        has_genai = False
        primary = PRIMARY
        for kv in kvs or ():
            k = kv.key
            v = kv.value
            x = v.stringValue  # strings, then ints: the common cases first, inline (hot loop)
            if x is None:
                x = v.intValue
                if x is None:
                    try:
                        x = typed_value(v)
                    except (TypeError, ValueError) as exc:  # inside a kvlist (typed Any)
                        self.error(self._line, self._offset,
                                   f"span {span_id}: attribute {k}: {type(exc).__name__}: "
                                   f"{exc}; the attribute is dropped, the span kept")
                        continue
                elif type(x) is not int:
                    x = int(x)
            p = primary.get(k)
            if p is not None:  # promoted: its column holds it, `attributes` need not
                t = p[1]
                # an int beyond int64 takes the converter, which rejects it: Arrow would not
                if type(x) is t and (t is not int  # int64 bounds as literals: no lookups
                                     or -0x8000000000000000 <= x <= 0x7FFFFFFFFFFFFFFF):
                    row[p[0]] = x
                else:
                    try:
                        row[p[0]] = p[2](x)
                    except (TypeError, ValueError) as exc:
                        self._attr_error(span_id, k, exc)
                        attrs[k] = x  # keep what could not be promoted
                continue
            attrs[k] = x
            if k.startswith(GENAI_PREFIXES):
                has_genai = True
                if k in FALLBACK:
                    if fallbacks is None:
                        fallbacks = []
                    fallbacks.append((k, x))
        return dumps_bytes(attrs), has_genai, fallbacks

    def _span(self, s: dict[str, Any], rid: int, service: str | None,
              scope_name: str | None) -> None:
        row: list[Any] = [None] * N_ROW
        trace_id = s.traceId
        span_id = s.spanId
        if not trace_id or not span_id:
            raise ValueError("empty traceId or spanId")
        trace_id = norm_id(trace_id, 32, "traceId")
        span_id = norm_id(span_id, 16, "spanId")
        row[I_TRACE] = trace_id
        row[I_SPAN] = span_id
        parent = s.parentSpanId
        if parent:
            row[I_PARENT] = norm_id(parent, 16, "parentSpanId")
        name = s.name or ""
        if type(name) is not str:
            raise TypeError(f"name must be a string, got {type(name).__name__}")
        row[I_NAME] = name
        kind = s.kind
        kind = kind if type(kind) is int else _KIND_NAMES[kind]
        if not 0 <= kind <= 5:  # OTLP's SpanKind values
            raise ValueError(f"kind {kind} is not an OTLP span kind (0-5)")
        row[I_KIND] = kind
        start = int(s.startTimeUnixNano)
        end = int(s.endTimeUnixNano)
        if not 0 < start <= end <= 0x7FFFFFFFFFFFFFFF:  # int64; 0 is OTLP's unset
            raise ValueError("start/end time unset, reversed or beyond int64")  # diagnose()
        row[I_START] = start
        row[I_END] = end
        row[I_DUR] = end - start
        st = s.status
        code = st.get("code", 0) if st else 0
        code = code if type(code) is int else _STATUS_NAMES[code]
        if not 0 <= code <= 2:  # OTLP's StatusCode values
            raise ValueError(f"status code {code} is not an OTLP status code (0-2)")
        row[I_STATUS] = code
        attrs_json, has_genai, fallbacks = self._typed_attributes(row, s.attributes, span_id)
        links = s.links
        self._finish(row, rid, service, scope_name, attrs_json, has_genai, fallbacks,
                     [(ln.traceId, ln.spanId) for ln in links] if links else None)

    def add_fast(self, groups: list[Any], line: int | None, offset: int | None) -> None:
        """Add the spans of a line the compiled fast path converted (``fastjson.convert``)."""
        self._line, self._offset = line, offset
        for res_json, scopes in groups:
            try:
                rid, service = self._resource_json(res_json)
            except (TypeError, ValueError, KeyError, AttributeError) as exc:
                self.lost_line(line, offset, f"malformed resourceSpans entry: {exc}")
                continue
            for scope_name, spans in scopes:
                for i, (row, attrs_json, has_genai, fallbacks, links) in enumerate(spans):
                    try:
                        self._finish(row, rid, service, scope_name, attrs_json, has_genai,
                                     fallbacks, links)
                    except _SPAN_ERRORS as exc:
                        self.lost_span(line, offset, f"span #{i}: {type(exc).__name__}: {exc}")
            if self.buffered >= self.chunk_spans:
                self.on_spans(self)

    def _resource_json(self, raw: bytes | None) -> tuple[int, str | None]:
        """:meth:`resource` of a resource's ``attributes`` given as JSON text."""
        hit = self._res_json_cache.get(raw)
        if hit is None:
            # msgspec, as the typed path decodes a resource: integers beyond 64 bits stay ints
            hit = self.resource(None if raw is None
                                else {"attributes": msgspec.json.decode(raw)})
            self._res_json_cache[raw] = hit
        return hit

    def _finish(self, row: list[Any], rid: int, service: str | None, scope_name: str | None,
                attrs_json: bytes, has_genai: bool, fallbacks: list[Any] | None,
                links: list[tuple[Any, Any]] | None) -> None:
        """Everything after the span's own fields and attributes: shared by both paths."""
        span_id = row[I_SPAN]
        trace_id = row[I_TRACE]
        row[I_SERVICE] = service
        row[I_RES] = rid
        row[I_SCOPE] = scope_name
        dialect = None
        if fallbacks is not None:
            for k, x in fallbacks:
                idx, conv, src = FALLBACK[k]
                if src is not None:
                    dialect = src
                if idx >= 0 and row[idx] is None:
                    try:
                        row[idx] = conv(x)
                    except (TypeError, ValueError) as exc:
                        self._attr_error(span_id, k, exc)
        if row[I_ROLE] is not None:
            row[I_SOURCE] = foreign.SOURCE_INFERAUDIT
        else:
            self._foreign(row, scope_name, dialect, has_genai)
        if row[I_TPOT] is None and row[I_DECODE] is not None:
            counts = [row[i] for i in I_SEQUENCES]
            row[I_TPOT] = derived_tpot(row[I_DECODE], row[I_OUT],
                                       next((c for c in counts if c is not None and c >= 1), 1))
        h2d, d2h = row[I_H2D_T], row[I_D2H_T]
        if h2d is not None or d2h is not None:
            copy_ns = (h2d or 0) + (d2h or 0)
            if copy_ns <= I64_MAX:
                row[I_COPY] = copy_ns
            else:
                self._attr_error(span_id, "copy_time_ns", ValueError(
                    f"h2d + d2h time {copy_ns} is outside the signed 64-bit range"))
        prof = row[I_PROFILE]
        if prof is not None and not os.path.isabs(prof):
            row[I_PROFILE] = os.path.normpath(os.path.join(self.base_dir, prof))
        row[I_ATTRS] = attrs_json  # bytes: Arrow takes UTF-8 bytes for a string column

        if links:  # all or none: a bad link rejects the span before any row is kept
            self.link_rows.extend([
                (span_id, trace_id, norm_id(lt, 32, "link traceId"),
                 norm_id(ls, 16, "link spanId"))
                for lt, ls in links])
            self.links += len(links)
        del row[N_SPAN:]
        buf = self.role_rows.get(row[I_ROLE])
        if buf is None:
            buf = self.role_rows[row[I_ROLE]] = []
        buf.append(tuple(row))
        self.buffered += 1
        self.spans += 1
