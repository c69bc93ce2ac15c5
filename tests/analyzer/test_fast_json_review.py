"""Adversarial review of the compiled OTLP/JSON fast path (``_fastotlp.c``), with reproducers.

Every case builds one OTLP/JSON line and reads it through ``worker.ingest_line`` twice, with and
without the fast path, into two row builders that must end equal (rows, links, resources,
errors), as ``test_fast_json_mutations.py`` does. A case marked ``regression`` reproduces a
divergence or crash the review found and that is fixed: the mark's reason says what was wrong.
The rest pin what was checked and found right: memory safety at the end of the buffer (behind a
guard page, in a child process), reference leaks on the give-up paths, the key and value caches
past their fill limit, re-entry from a collection, threads, and ``transpose``.
"""

from __future__ import annotations

import gc
import json
import random
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest

from inferaudit_analyzer.ingest import fastjson, worker
from inferaudit_analyzer.ingest.otlp_json import RowBuilder
from inferaudit_sdk import semconv as sc

needs_extension = pytest.mark.skipif(not fastjson.available(),
                                     reason="the compiled fast path (_fastotlp) is not built")

T0 = 1_767_225_600_000_000_000
SVC = '{"attributes":[{"key":"service.name","value":{"stringValue":"svc"}}]}'
BIG = "1" + "0" * 400  # an integer literal beyond any double


# -- building lines --------------------------------------------------------------------------
def _span(attrs: str = "[]", extra: str = "", tid: str | None = None, sid: str | None = None,
          i: int = 0, name: str = '"name":"s"') -> str:
    tid = tid if tid is not None else f'"{i + 1:032x}"'
    sid = sid if sid is not None else f'"{i + 1:016x}"'
    return (f'{{"traceId":{tid},"spanId":{sid},{name},"kind":1,'
            f'"startTimeUnixNano":"{T0 + i}","endTimeUnixNano":"{T0 + i + 1000}",'
            f'"attributes":{attrs}{extra}}}')


def _line(*spans: str, resource: str = SVC, scope: str = '{"name":"x"}') -> bytes:
    body = ",".join(spans or (_span(),))
    return (f'{{"resourceSpans":[{{"resource":{resource},'
            f'"scopeSpans":[{{"scope":{scope},"spans":[{body}]}}]}}]}}').encode()


def _kv(key: str, value: str) -> str:
    return f'{{"key":"{key}","value":{value}}}'


def _attrs(*kvs: str) -> str:
    return "[" + ",".join(kvs) + "]"


def _ingest(line: bytes, fast: bool) -> RowBuilder:
    b = RowBuilder("/data/traces.jsonl", lambda _b: None, chunk_spans=1 << 30)
    worker.ingest_line(b, line, 1, 0, fastjson.convert if fast else None)
    return b


def _state(b: RowBuilder) -> tuple:
    return (b.role_rows, b.link_rows, b.resources, b.errors, b.spans, b.links, b.metric_rows,
            b.metric_points)


def _assert_agree(line: bytes, exact_floats: bool = False) -> None:
    fast, slow = _state(_ingest(line, True)), _state(_ingest(line, False))
    for name, f, s in zip(("rows", "links", "resources", "errors", "spans", "n_links",
                           "metric_rows", "metric_points"), fast, slow, strict=True):
        if exact_floats:  # -0.0 == 0.0, yet Parquet keeps the sign: compare the spelling
            f, s = repr(f), repr(s)
        assert f == s, f"{name} differ for {line[:300]!r}"


def _convert(line: Any) -> Any:
    if not fastjson._configured:
        fastjson._configure()
    return fastjson._fastotlp.convert(line)


def _was_bug(reason: str) -> pytest.MarkDecorator:
    """A reproducer of a divergence found in review and since fixed; the reason says what it was."""
    return pytest.mark.regression(reason=reason)


# -- 1. field names written with escapes ------------------------------------------------------
_ESCAPED_FIELD = _was_bug(
    "FOR_FIELDS/key_is (and the hand-written field loops in scan_span, scan_scope_spans, "
    "scan_resource_spans, scan_links) skip an escaped field name as unknown, but msgspec "
    "decodes the name and reads the field: the fast path keeps the line with the field lost")
_ONE_LINK = f'"links":[{{"traceId":"{5:032x}","spanId":"{5:016x}"}}]'

_ESCAPED_CASES = [
    ("span-name", _line(_span(name='"n\\u0061me":"s"'))),
    ("span-kind-repeated", _line(_span(extra=',"kin\\u0064":3'))),
    ("span-parent", _line(_span(extra=f',"parentSpan\\u0049d":"{7:016x}"'))),
    ("span-status", _line(_span(extra=',"st\\u0061tus":{"code":2}'))),
    ("status-code", _line(_span(extra=',"status":{"c\\u006fde":2}'))),
    ("span-links", _line(_span(extra="," + _ONE_LINK.replace("links", "l\\u0069nks")))),
    ("span-attributes", _line(_span().replace('"attributes"', '"\\u0061ttributes"')
                              .replace("[]", _attrs(_kv("foo", '{"stringValue":"v"}'))))),
    ("anyvalue-stringValue", _line(_span(_attrs(_kv("foo", '{"string\\u0056alue":"v"}'))))),
    ("keyvalue-value", _line(_span('[{"key":"foo","v\\u0061lue":{"stringValue":"v"}}]'))),
    ("arrayvalue-values",
     _line(_span(_attrs(_kv("foo", '{"arrayValue":{"v\\u0061lues":[{"intValue":1}]}}'))))),
    ("scope-name", _line(_span(), scope='{"n\\u0061me":"x"}')),
    ("scopeSpans", _line(_span()).replace(b'"scopeSpans"', b'"scope\\u0053pans"')),
    ("resource-attributes",
     _line(_span(), resource=SVC.replace('"attributes"', '"attr\\u0069butes"'))),
    ("resource-attributes-repeated-escaped",
     _line(_span(), resource=SVC[:-1] + ',"\\u0061ttributes":[]}')),
    ("top-level-resourceMetrics",  # the fast path keeps the spans and drops the metrics
     _line(_span())[:-1] + b',"resource\\u004detrics":[{"scopeMetrics":[{"metrics":[{"name":'
     b'"m","gauge":{"dataPoints":[{"timeUnixNano":"1767225600000000000","asDouble":1.5}]}}]}]}]}'),
]


@needs_extension
@pytest.mark.parametrize("line", [pytest.param(x, id=i, marks=_ESCAPED_FIELD)
                                  for i, x in _ESCAPED_CASES])
def test_escaped_field_names_are_read_as_msgspec_reads_them(line):
    _assert_agree(line)


@needs_extension
@pytest.mark.parametrize("line", [
    _line(_span(extra=f',"links":[{{"trace\\u0049d":"{5:032x}","spanId":"{5:016x}"}}]')),
    _line(_span(), resource=SVC.replace('"key"', '"k\\u0065y"')),
    _line(_span()).replace(b'"resourceSpans"', b'"resource\\u0053pans"'),
    _line(_span('[{"k\\u0065y":"foo","value":{"stringValue":"v"}}]')),
])
def test_escaped_field_names_the_fast_path_declines_agree(line):
    _assert_agree(line)


# -- 2. an AnyValue field repeated with null ----------------------------------------------------
@needs_extension
@_was_bug("scan_any_value: a null field is skipped before the duplicate check (set++), so "
        '{"stringValue":"a","stringValue":null} keeps "a"; msgspec keeps the last (null)')
@pytest.mark.parametrize("value", [
    '{"stringValue":"a","stringValue":null}',
    '{"intValue":"5","intValue":null}',
    '{"doubleValue":0.5,"doubleValue":null}',
    '{"boolValue":true,"boolValue":null}',
    '{"bytesValue":"AAE=","bytesValue":null}',
    '{"arrayValue":{"values":[{"intValue":"1"}]},"arrayValue":null}',
])
def test_a_value_field_repeated_as_null_is_unset_as_in_msgspec(value):
    _assert_agree(_line(_span(_attrs(_kv("foo", value)))))


@needs_extension
@pytest.mark.parametrize("value", [
    '{"stringValue":null,"stringValue":"a"}', '{"stringValue":"a","stringValue":"b"}',
    '{"stringValue":"a","intValue":null}', '{"kvlistValue":null,"intValue":"3"}',
])
def test_other_repeated_value_fields_agree(value):
    _assert_agree(_line(_span(_attrs(_kv("foo", value)))))


@needs_extension
@pytest.mark.parametrize("extra", [
    ',"kind":2', ',"name":null', ',"status":{"code":2,"code":null}',
    f',"parentSpanId":"{7:016x}","parentSpanId":null',
    f',"links":[{{"traceId":"{5:032x}","spanId":"{5:016x}","spanId":null}}]',
    ',"attributes":null',
])
def test_repeated_span_fields_agree(extra):
    _assert_agree(_line(_span(_attrs(_kv("foo", '{"intValue":"5"}')), extra=extra)))


# -- 3. ids: the Python path counts characters, the fast path bytes ----------------------------
@needs_extension
@_was_bug("scan_id / the parentSpanId branch of scan_span compare the id's UTF-8 byte length "
        "with 32/16; RowBuilder._span and _finish compare len(str) and send any other length "
        "through hex_id, which lower-cases: a 32-byte id of 16 'É' stays 'ÉÉ..' in C, 'éé..' "
        "in Python")
@pytest.mark.parametrize("span", [
    _span(tid='"' + "É" * 16 + '"'), _span(sid='"' + "É" * 8 + '"'),
    _span(tid='"' + "A" * 30 + "é" + '"'),
    _span(extra=',"parentSpanId":"' + "É" * 8 + '"'),
], ids=["trace", "span", "trace-31-chars", "parent"])
def test_non_ascii_ids_agree(span):
    _assert_agree(_line(span))


@needs_extension
@pytest.mark.parametrize("span", [
    _span(tid=f'"{"AB" * 16}"'), _span(sid=f'"{"CD" * 8}"'),
    _span(extra=f',"parentSpanId":"{"EF" * 8}"'), _span(extra=',"parentSpanId":""'),
    _span(tid='"AAAAAAAAAAAAAAAAAAAAAQ=="'),
    # link ids go through RowBuilder._finish's own len() check on both paths
    _span(extra=f',"links":[{{"traceId":"{"É" * 16}","spanId":"{5:016x}"}}]'),
    _span(extra=f',"links":[{{"traceId":"{5:032x}","spanId":"{"É" * 8}"}}]'),
])
def test_other_ids_agree(span):
    _assert_agree(_line(span))


# -- 4. numbers ---------------------------------------------------------------------------------
@needs_extension
@_was_bug("scan_any_value parses doubleValue with PyOS_string_to_double, so the integer literal "
        "-0 is -0.0 (written -0.0); msgspec decodes an integer literal into a float field as an "
        "int first, giving 0.0")
@pytest.mark.parametrize(("key", "value"), [
    ("foo", '{"doubleValue":-0}'), ("foo", '{"arrayValue":{"values":[{"doubleValue":-0}]}}'),
    (sc.GPU_UTILIZATION_RATIO, '{"doubleValue":-0}'),
], ids=["leftover", "array", "promoted"])
def test_double_written_as_integer_minus_zero(key, value):
    _assert_agree(_line(_span(_attrs(_kv(key, value)))), exact_floats=True)


_DOUBLES = ["-0.0", "0", "1e16", "1e-7", "5e-324", "4.9406564584124654e-324",
            "2.4703282292062328e-324", "2.2250738585072011e-308", "1.7976931348623157e308",
            "0.30000000000000004", "9007199254740993", "18446744073709551616",
            "123456789012345678901234567890", "1e-400", "-1e-400", "0.1e1", "1E5",
            "7.2057594037927933e16", "1.00000000000000011102230246251565404236316680908203125"]


@needs_extension
@pytest.mark.parametrize("d", _DOUBLES)
def test_doubles_agree(d):
    value = f'{{"doubleValue":{d}}}'
    _assert_agree(_line(_span(_attrs(
        _kv("foo", value), _kv(sc.GPU_UTILIZATION_RATIO, value),
        _kv("arr", f'{{"arrayValue":{{"values":[{value},{{"intValue":"1"}}]}}}}')))))


_INTS = ["-9223372036854775808", "9223372036854775807", "9223372036854775808",
         "-9223372036854775809", "18446744073709551615", "99999999999999999999", "-0", "0",
         "00", "+1", "1.0", "1e2"]


@needs_extension
@pytest.mark.parametrize("i", _INTS)
@pytest.mark.parametrize("quoted", [True, False])
def test_int_values_and_times_agree(i, quoted):
    v = f'"{i}"' if quoted else i
    value = f'{{"intValue":{v}}}'
    _assert_agree(_line(_span(_attrs(_kv("foo", value),
                                     _kv(sc.GEN_AI_USAGE_INPUT_TOKENS, value)))))
    _assert_agree(_line(_span().replace(f'"startTimeUnixNano":"{T0}"',
                                        f'"startTimeUnixNano":{v}')))
    _assert_agree(_line(_span().replace(f'"endTimeUnixNano":"{T0 + 1000}"',
                                        f'"endTimeUnixNano":{v}')))


@needs_extension
@_was_bug("the fast path hands the resource's raw attributes to RowBuilder._resource_json, which "
        "reads them with orjson.loads: an integer beyond 64 bits becomes a float there, while "
        "the typed path's msgspec keeps the int, so resource_id and the resource's attributes "
        "differ (scan_resource_spans should decline such numbers, or _resource_json decode "
        "with msgspec)")
@pytest.mark.parametrize("value", [
    '{"intValue":-9223372036854775809}', '{"intValue":18446744073709551617}',
    '{"intValue":123456789012345678901234567890}',
    '{"kvlistValue":{"values":[{"key":"a","value":{"intValue":99999999999999999999}}]}}',
])
def test_resource_integers_beyond_64_bits_agree(value):
    _assert_agree(_line(_span(), resource=f'{{"attributes":[{_kv("foo", value)}]}}'))


@needs_extension
@_was_bug("skip_value accepts any number; in the parts msgspec decodes as Any (scope, status, "
        "resource) a number beyond a double is 'Number out of range', so the Python path "
        "reports the line as invalid JSON and keeps no span, while the fast path keeps the "
        "span (or, in resource attributes, reports a different error)")
@pytest.mark.parametrize("where", ["scope", "status", "resource-extra", "resource-attr"])
@pytest.mark.parametrize("num", ["1e400", "-1e400"])
def test_out_of_range_numbers_in_any_typed_fields_agree(where, num):
    if where == "scope":
        line = _line(_span(), scope=f'{{"name":"x","v":{num}}}')
    elif where == "status":
        line = _line(_span(extra=f',"status":{{"x":{num}}}'))
    elif where == "resource-extra":
        line = _line(_span(), resource=f'{{"attributes":[],"dropped":{num}}}')
    else:
        value = f'{{"doubleValue":{num}}}'
        line = _line(_span(), resource=f'{{"attributes":[{_kv("f", value)}]}}')
    _assert_agree(line)


@needs_extension
@pytest.mark.parametrize("num", ["1e400", BIG])
def test_out_of_range_numbers_in_skipped_fields_agree(num):
    _assert_agree(_line(_span(extra=f',"droppedAttributesCount":{num}')))
    _assert_agree(_line(_span())[:-1] + f',"x":{num}}}'.encode())
    _assert_agree(_line(_span(_attrs(_kv("foo", f'{{"x":{num},"stringValue":"a"}}')))))
    _assert_agree(_line(_span(extra=f',"links":[{{"traceId":"{5:032x}",'
                                    f'"spanId":"{5:016x}","x":{num}}}]')))


_HUGE_KVLIST = _line(_span(_attrs(_kv("foo", '{"kvlistValue":{"values":[{"key":"a","value":'
                                            f'{{"doubleValue":{BIG}}}}}]}}}}'))))
_HUGE_RESOURCE = _line(_span(), resource='{"attributes":[' + _kv("f", f'{{"doubleValue":{BIG}}}')
                       + "]}")
_OVERFLOW = _was_bug("Python path, not C: otlp_values.any_value does float(x) on the int msgspec "
                   "decodes from a 400-digit literal in an Any-typed value (kvlistValue, "
                   "resource); OverflowError is not in _SPAN_ERRORS nor caught by "
                   "RowBuilder.add_traces/_add_typed or ingest_line, so run_unit raises and "
                   "the whole work unit is lost")


@pytest.mark.parametrize(("line", "fast"), [
    pytest.param(_HUGE_KVLIST, False, id="kvlist-python", marks=_OVERFLOW),
    pytest.param(_HUGE_KVLIST, True, id="kvlist-fast", marks=[needs_extension, _OVERFLOW]),
    pytest.param(_HUGE_RESOURCE, False, id="resource-python", marks=_OVERFLOW),
    pytest.param(_HUGE_RESOURCE, True, id="resource-fast", marks=needs_extension),
])
def test_a_huge_integer_double_never_raises_out_of_ingest(line, fast):
    b = _ingest(line, fast)
    assert b.errors


# -- 5. attribute keys and values: what was checked and agrees ---------------------------------
_FALLBACK_KEY = sc.LEGACY_USAGE_PROMPT_TOKENS


@needs_extension
@pytest.mark.parametrize("attrs", [
    _attrs(_kv("gen_ai.usage.input_tok\\u0065ns", '{"intValue":"5"}')),
    _attrs(_kv("gen_ai.usage.input_tok\\u0065ns", '{"intValue":"5"}'),
           _kv(sc.GEN_AI_USAGE_INPUT_TOKENS, '{"intValue":"6"}')),
    _attrs(_kv("foo", '{"intValue":"5"}'), _kv("f\\u006fo", '{"intValue":"6"}')),
    _attrs(_kv("f\\u006fo", '{"intValue":"5"}'), _kv("foo", '{"intValue":"6"}')),
    _attrs(_kv("a\\/b", '{"intValue":"5"}'), _kv("a/b", '{"intValue":"6"}')),
    _attrs(_kv("\\u00e9", '{"intValue":"5"}'), _kv("é", '{"intValue":"6"}')),
    _attrs(_kv("", '{"intValue":"5"}')),
    _attrs(_kv("", '{"intValue":"5"}'), _kv("", '{"intValue":"6"}')),
    _attrs(_kv("a\\u0000b", '{"stringValue":"x\\u0000y"}')),
    _attrs(_kv("\x7f\u2028\ufeff\U0010ffff", '{"stringValue":"\x7f\u2029"}')),  # raw = orjson's
    _attrs(_kv(sc.SPAN_ROLE, '{"stringValue":"r\\u0065quest"}')),
    _attrs(_kv(sc.PROFILE_TRACE_PATH, '{"stringValue":""}')),
    _attrs(_kv(sc.PROFILE_TRACE_PATH, '{"stringValue":"../p/x.json"}')),
    _attrs(_kv(_FALLBACK_KEY, "{}")),
    '[{"key":"' + _FALLBACK_KEY + '"}]',
    _attrs(_kv(_FALLBACK_KEY, '{"intValue":"7"}'), _kv(_FALLBACK_KEY, '{"intValue":"8"}')),
    _attrs(_kv(sc.VLLM_LATENCY_TIME_TO_FIRST_TOKEN, '{"doubleValue":0.25}')),
    _attrs(_kv(sc.VLLM_LATENCY_TIME_TO_FIRST_TOKEN, '{"doubleValue":1e300}')),
    _attrs(_kv("prompt_tokens", '{"intValue":"5"}')),  # a fallback's tail without its prefix
    _attrs(_kv("gen_ai.x", '{"bytesValue":"AAE="}'), _kv("llm.y", "{}")),
    _attrs(_kv("foo", '{"intValue":"-0"}')),
    _attrs(_kv(sc.GEN_AI_REQUEST_STREAM, '{"boolValue":false}'),
           _kv(sc.GEN_AI_REQUEST_STREAM, '{"boolValue":true}')),
    _attrs(_kv("arr", '{"arrayValue":{"values":[{"arrayValue":{"values":[{}]}},{"boolValue":'
                      'true},{"stringValue":"\\ud83d\\ude00"},{"bytesValue":"x"}]}}')),
    _attrs(_kv("foo", '{"stringValue":"' + "\\ud800" + '"}')),
])
def test_attribute_edge_cases_agree(attrs):
    _assert_agree(_line(_span(attrs)))


@needs_extension
def test_keys_and_values_longer_than_the_caches_take_agree():
    long_key = "gen_ai." + "k" * 80
    long_model = "m" * 90
    spans = [_span(_attrs(_kv(long_key, f'{{"intValue":"{i}"}}'),
                          _kv(sc.GEN_AI_REQUEST_MODEL, f'{{"stringValue":"{long_model}{i % 2}"}}')),
                   i=i) for i in range(4)]
    _assert_agree(_line(*spans))


@needs_extension
def test_keys_that_collide_in_the_key_hash_stay_apart():
    # key_hash reads the length and three 8-byte windows; a byte outside them does not count
    key = sc.GEN_AI_USAGE_INPUT_TOKENS
    n = len(key)
    covered = set(range(8)) | set(range(n - 8, n)) | set(range(n // 2 - 4, n // 2 + 4))
    gap = next(i for i in range(n) if i not in covered)
    twin = key[:gap] + ("X" if key[gap] != "X" else "Y") + key[gap + 1:]
    for attrs in (_attrs(_kv(twin, '{"intValue":"1"}'), _kv(key, '{"intValue":"2"}')),
                  _attrs(_kv(key, '{"intValue":"2"}'), _kv(twin, '{"intValue":"1"}'))):
        _assert_agree(_line(_span(attrs)))
    groups = _convert(_line(_span(_attrs(_kv(twin, '{"intValue":"1"}')))))
    assert groups[0][1][0][1][0][1] == f'{{"{twin}":1}}'.encode()


@needs_extension
def test_past_the_key_and_value_cache_limits_results_stay_right():
    tag = f"{random.Random().getrandbits(40):x}"
    keys = [f"k.{tag}.{i}" for i in range(3200)]  # beyond 3/4 of the 4096 slots in any order
    spans = [_span(_attrs(*[_kv(k, f'{{"intValue":"{j}"}}') for k in keys[j::8]],
                          _kv(sc.GEN_AI_REQUEST_MODEL, f'{{"stringValue":"m.{tag}.{j}"}}'),
                          _kv(sc.GEN_AI_USAGE_INPUT_TOKENS, '{"intValue":"3"}'),
                          _kv(_FALLBACK_KEY, '{"intValue":"4"}')),
                   i=j) for j in range(8)]
    _assert_agree(_line(*spans))
    # thousands of distinct values of a shared column, then keys and values seen before
    many = [_span(_attrs(_kv(sc.GEN_AI_REQUEST_MODEL, f'{{"stringValue":"v.{tag}.{i}"}}'),
                         _kv(keys[i], '{"boolValue":true}')), i=i, name=f'"name":"n{tag}{i}"')
            for i in range(3200)]
    _assert_agree(_line(*many))
    _assert_agree(_line(*spans))


# -- 6. memory safety ---------------------------------------------------------------------------
_GUARD_SCRIPT = textwrap.dedent("""
    import ctypes, mmap, sys
    from inferaudit_analyzer.ingest import fastjson
    fastjson._configure()
    conv = fastjson._fastotlp.convert
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    page = mmap.PAGESIZE
    lines = [bytes.fromhex(h) for h in sys.stdin.read().split()]
    n_pages = max(len(x) for x in lines) // page + 1
    m = mmap.mmap(-1, (n_pages + 1) * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(m))
    assert libc.mprotect(base + n_pages * page, page, 0) == 0, ctypes.get_errno()
    edge = n_pages * page
    view = memoryview(m)
    checked = 0
    for line in lines:
        for cut in range(1, len(line) + 1):
            part = line[:cut]
            m[edge - cut:edge] = part
            got = conv(view[edge - cut:edge])  # the last byte sits just before the guard page
            assert got == conv(part), part
            checked += 1
    print("checked", checked)
""")


def _guard_lines() -> list[bytes]:
    attrs = _attrs(_kv("s", '{"stringValue":"abcdefghijklmnop\\u00e9\\ud83d\\ude00\\n"}'),
                   _kv("i", '{"intValue":"-9223372036854775808"}'), _kv("n", '{"intValue":12}'),
                   _kv("d", '{"doubleValue":1.5e-7}'), _kv("b", '{"boolValue":true}'),
                   _kv("e", "{}"), _kv("é€😀", '{"bytesValue":"AAE="}'),
                   _kv("a", '{"arrayValue":{"values":[{"boolValue":false},{"doubleValue":2}]}}'),
                   _kv(_FALLBACK_KEY, '{"intValue":"3"}'))
    full = _line(_span(attrs, extra=f',"status":{{"code":2}},"parentSpanId":"{9:016x}",'
                                    f'"x":[null,true,false,-1.5e+3,"é"],' + _ONE_LINK))
    return [full, b'{"resourceSpans":[]}', b'{"x":"\\u12', b'{"x":12', b'{"x":tru',
            b'{"x":"\xe2\x82', b'{"x":"12345678901234567']


@needs_extension
def test_no_read_past_the_end_of_the_line():
    # each prefix of the lines ends exactly at a PROT_NONE page: one byte read past the end
    # kills the child with SIGSEGV instead of passing silently on the bytes object's NUL
    lines = _guard_lines()
    proc = subprocess.run([sys.executable, "-c", _GUARD_SCRIPT],
                          input=" ".join(x.hex() for x in lines), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["checked", str(sum(len(x) for x in lines))]


@needs_extension
@pytest.mark.parametrize("depth", [30, 33, 250, 257, 100_000])
def test_deep_nesting_agrees(depth):
    deep = "[" * depth + "]" * depth
    _assert_agree(_line(_span(extra=f',"x":{deep}')))
    nested = '{"intValue":"1"}'
    for _ in range(min(depth, 2000)):
        nested = f'{{"arrayValue":{{"values":[{nested}]}}}}'
    _assert_agree(_line(_span(_attrs(_kv("a", nested)))))


@needs_extension
def test_inputs_that_are_not_bytes():
    line = _line(_span(_attrs(_kv("foo", '{"stringValue":"a\\tb"}'))))
    want = _convert(line)
    assert want is not None
    assert _convert(bytearray(line)) == want
    assert _convert(memoryview(line)) == want
    with pytest.raises(TypeError):
        _convert(line.decode())
    assert fastjson.convert(line.decode()) is None  # the wrapper hands it to Python
    assert _convert(b"") is None and _convert(b"   \n") is None


# -- 7. reference leaks on the give-up paths ------------------------------------------------------
def _late_failures(rng: random.Random) -> list[bytes]:
    """Lines that give up late, after rows, tuples and strings were built."""
    attrs = _attrs(_kv(sc.SPAN_ROLE, '{"stringValue":"request"}'),
                   _kv(sc.GEN_AI_REQUEST_MODEL, '{"stringValue":"m\\u00e9"}'),
                   _kv(_FALLBACK_KEY, '{"intValue":"3"}'), _kv("x", '{"stringValue":"\\n"}'),
                   _kv("arr", '{"arrayValue":{"values":[{"doubleValue":0.5}]}}'))
    good = [_span(attrs, extra="," + _ONE_LINK, i=i) for i in range(4)]
    breaks = [',"links":[{"traceId":"x"}]', ',"status":{"code":9}', ',"kind":1',
              ',"attributes":[]', f',"links":[{{"traceId":"{1:032x}","spanId":"{1:016x}",'
              f'"spanId":"{2:016x}"}}]', ',"name":5', ',"x":[' * 300]
    out = [_line(*good, _span(extra=b)) for b in breaks]
    out += [_line(*good) + b"x", _line(*good)[:-1] + b',"resourceMetrics":[]}',
            _line(*good, resource=SVC[:-1] + ',"attributes":[]}'),
            _line(*good, scope='{"name":"a","name":"b"}'),
            _line(*good).replace(b'"scope":', b'"scope":{},"scope":')]
    base = _line(*good)
    for _ in range(40):
        i = rng.randrange(len(base))
        out.append(base[:i] + rng.choice([b"", b'"', b"}", b"\\", b"\xff", b"]"]) + base[i + 1:])
    out.append(base)
    return out


@needs_extension
def test_give_up_paths_leak_nothing():
    lines = _late_failures(random.Random(7))
    conv = _convert
    for line in lines * 5:  # warm the caches and free lists
        conv(line)
    gc.collect()
    blocks, nones = sys.getallocatedblocks(), sys.getrefcount(None)
    rounds = 100_000 // len(lines) + 1
    for _ in range(rounds):
        for line in lines:
            conv(line)
    gc.collect()
    grown = sys.getallocatedblocks() - blocks
    assert grown < 2000, f"{grown} blocks more after {rounds * len(lines)} conversions"
    if sys.version_info < (3, 12):  # None is immortal from 3.12
        assert abs(sys.getrefcount(None) - nones) < 100


# -- 8. re-entry and threads ----------------------------------------------------------------------
def _hot_line(tag: str, n: int = 12) -> bytes:
    spans = [_span(_attrs(_kv(f"k{tag}", f'{{"stringValue":"v{tag}\\n"}}'),
                          _kv(_FALLBACK_KEY, f'{{"intValue":"{i}"}}'),
                          _kv(f"a{tag}", '{"arrayValue":{"values":[{"doubleValue":0.1}]}}')),
                   extra=f',"links":[{{"traceId":"{i + 1:032x}","spanId":"{i + 1:016x}"}}]',
                   i=i) for i in range(n)]
    return _line(*spans)


@needs_extension
def test_a_collection_that_reenters_convert_does_not_mix_lines():
    a, b = _hot_line("a"), _hot_line("b")
    ref_a, ref_b = _convert(a), _convert(b)
    inner: list[Any] = []

    def on_gc(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            inner.append(_convert(b))  # kept alive: free lists stay empty, collections go on

    gc.collect()
    hold = [(i, -i) for i in range(5000)] + [[i] for i in range(500)]  # drain free lists
    threshold = gc.get_threshold()
    gc.callbacks.append(on_gc)
    gc.set_threshold(1)
    try:
        got = _convert(a)
    finally:
        gc.callbacks.remove(on_gc)
        gc.set_threshold(*threshold)
    del hold
    assert inner, "no collection ran inside convert(): the test did not test"
    assert got == ref_a
    assert all(x == ref_b for x in inner)


@needs_extension
@pytest.mark.parametrize("finalizer_yields", [False, True])
def test_threads_converting_at_once_agree(finalizer_yields):
    lines = [_hot_line("a"), _hot_line("b"), _hot_line("c\\u00e9")]
    refs = [_convert(x) for x in lines]
    bad: list[int] = []
    stop = threading.Event()

    def hammer(k: int) -> None:
        while not stop.is_set():
            if _convert(lines[k]) != refs[k]:
                bad.append(k)

    def yield_gil(_phase: str, _info: dict[str, Any]) -> None:
        time.sleep(0)  # a finalizer doing I/O: the GIL goes to another thread mid-convert

    threshold, interval = gc.get_threshold(), sys.getswitchinterval()
    if finalizer_yields:
        gc.callbacks.append(yield_gil)
        gc.set_threshold(5)
    sys.setswitchinterval(1e-5)
    threads = [threading.Thread(target=hammer, args=(k,)) for k in range(len(lines))]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
        sys.setswitchinterval(interval)
        if finalizer_yields:
            gc.callbacks.remove(yield_gil)
            gc.set_threshold(*threshold)
    assert not bad


# -- 9. transpose ----------------------------------------------------------------------------------
def _zip_columns(rows: list[Any], n: int) -> list[list[Any]]:
    return [list(c) for c in zip(*[tuple(r)[:n] for r in rows], strict=True)]


@needs_extension
@pytest.mark.parametrize("n", [0, 1, 3])
def test_transpose_is_zip(n):
    obj = object()
    rows = [(1, None, "a", 4), [obj, 2.5, None, b"x"], (None, None, None, None, "extra")]
    cols = fastjson.transpose(rows, n)
    assert cols == _zip_columns(rows, n)[:n]
    assert all(type(c) is list for c in cols)


@needs_extension
def test_transpose_edges():
    assert fastjson.transpose([], 3) == [[], [], []]  # n empty columns, as the sink needs
    assert fastjson.transpose([], 0) == []
    assert fastjson.transpose([()], 0) == []
    with pytest.raises(ValueError):
        fastjson.transpose([(1, 2), (1,)], 2)
    with pytest.raises(ValueError):
        fastjson.transpose([{"a": 1}], 1)
    with pytest.raises(ValueError):
        fastjson.transpose([(1,)], -1)
    with pytest.raises(TypeError):
        fastjson.transpose(((1,),), 1)


@needs_extension
def test_transpose_keeps_references_right():
    obj = object()
    before = sys.getrefcount(obj)
    for _ in range(1000):
        cols = fastjson.transpose([(obj, None), [None, obj]], 2)
    assert cols == [[obj, None], [None, obj]]
    del cols
    assert sys.getrefcount(obj) == before


@needs_extension
def test_transpose_of_sink_rows_matches_the_struct_path():
    import pyarrow as pa

    from inferaudit_analyzer import schema

    line = _line(*[_span(_attrs(_kv(sc.SPAN_ROLE, '{"stringValue":"request"}'),
                                _kv(sc.GEN_AI_USAGE_INPUT_TOKENS, f'{{"intValue":"{i}"}}')),
                         i=i) for i in range(5)])
    rows = [r for chunk in _ingest(line, True).take_span_chunks() for r in chunk]
    sch = schema.arrow_schema("spans")
    cols = fastjson.transpose(rows, len(sch))
    arrays = [pa.array(c, type=f.type) for f, c in zip(sch, cols, strict=True)]
    by_cols = pa.Table.from_arrays(arrays, schema=sch)
    by_struct = pa.Table.from_struct_array(pa.array(rows, type=pa.struct(list(sch))))
    assert by_cols.equals(by_struct)


def test_this_file_builds_valid_json():
    # the reproducers must be well-formed where they mean to be, or they test the wrong thing
    json.loads(_line(_span(_attrs(_kv("a\\u0000b", '{"stringValue":"x"}')))))
    json.loads(_hot_line("c\\u00e9"))
    json.loads(_guard_lines()[0])
