"""Seeded mutations of real OTLP/JSON lines: the compiled fast path never disagrees with Python.

Each mutant line (bytes deleted, inserted, duplicated; field names and value kinds swapped) goes
through ``worker.ingest_line`` twice, with and without the fast path, into two row builders that
must end equal: rows, links, resources and errors. A mutant the fast path declines is the Python
path's by construction; one it takes must give exactly what Python gives. It also shows the C
code survives malformed input without crashing the process.
"""

from __future__ import annotations

import json
import random
import shutil

import _ingest_fixtures as fx
import pytest

from inferaudit_analyzer.ingest import fastjson, worker
from inferaudit_analyzer.ingest.otlp_json import RowBuilder

needs_extension = pytest.mark.skipif(not fastjson.available(),
                                     reason="the compiled fast path (_fastotlp) is not built")

_SWAPS = [(b'"stringValue"', b'"intValue"'), (b'"intValue"', b'"doubleValue"'),
          (b'"intValue"', b'"stringValue"'), (b'"boolValue"', b'"intValue"'),
          (b'"doubleValue"', b'"stringValue"'), (b'"arrayValue"', b'"kvlistValue"'),
          (b'"key"', b'"kee"'), (b'"value"', b'"key"'), (b'"spanId"', b'"traceId"'),
          (b'"kind":1', b'"kind":"SPAN_KIND_INTERNAL"'), (b'"scopeSpans"', b'"scope"'),
          (b'"attributes"', b'"links"'), (b'"code":', b'"code":"2",'),
          (b':true', b':"true"'), (b':false', b':0'), (b'"0', b'"-0'), (b'"1', b'"+1'),
          (b'"', b'\\"'), (b'a', b'\\u00e9'), (b'e', b'\xc3\xa9'), (b'o', b'\xff'),
          (b'"name":"', b'"name":"\\n'), (b'}', b',"x":[1,{"y":null}]}')]
_INSERTS = [b'"', b"{", b"}", b"[", b"]", b",", b":", b"\\", b"0", b"-", b"e", b" ", b"\n",
            b"null", b"\x00", b"\xe2\x82", b"99999999999999999999"]


def _base_lines() -> list[bytes]:
    req = fx.trace_request(fx.make_spans())
    canonical = json.dumps(fx.otlp_json(req), separators=(",", ":")).encode()
    printer = json.dumps(fx.protobuf_json(req)).encode()  # base64 ids, enum names, spaces
    return [canonical, printer]


def _mutate(rng: random.Random, line: bytes) -> bytes:
    for _ in range(rng.randint(1, 3)):
        op = rng.random()
        if op < 0.45:
            a, b = rng.choice(_SWAPS)
            hits = [i for i in range(len(line)) if line.startswith(a, i)]
            if hits:
                i = rng.choice(hits)
                line = line[:i] + b + line[i + len(a):]
        elif op < 0.65:
            i = rng.randrange(len(line))
            line = line[:i] + rng.choice(_INSERTS) + line[i:]
        elif op < 0.85:
            i = rng.randrange(len(line))
            line = line[:i] + line[i + rng.randint(1, 8):]
        else:
            i = rng.randrange(len(line))
            j = min(len(line), i + rng.randint(1, 200))
            line = line[:j] + line[i:j] + line[j:]
    return line


def _ingest(line: bytes, fast: bool) -> RowBuilder:
    b = RowBuilder("/data/traces.jsonl", lambda _b: None, chunk_spans=1 << 30)
    worker.ingest_line(b, line, 1, 0, fastjson.convert if fast else None)
    return b


def _state(b: RowBuilder) -> tuple:
    return (b.role_rows, b.link_rows, b.resources, b.errors, b.spans, b.links)


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="no C compiler here: the package installs without the fast path")
def test_the_extension_is_built_where_a_compiler_exists():
    # the build is optional so that installs never fail; this makes a failed build visible
    assert fastjson.available(), "pip install built no _fastotlp: see the install log"


@needs_extension
def test_unmutated_lines_take_the_fast_path_and_agree():
    canonical, printer = _base_lines()
    before = fastjson.stats()
    fast = _ingest(canonical, True)
    assert fastjson.stats()["lines_fast"] == before["lines_fast"] + 1
    assert fast.spans > 0 and _state(fast) == _state(_ingest(canonical, False))
    # the printer's base64 ids are declined, and still read the same
    assert _state(_ingest(printer, True)) == _state(_ingest(printer, False))


@needs_extension
@pytest.mark.parametrize("seed", range(4))
def test_mutants_agree_with_the_python_path(seed):
    rng = random.Random(seed)
    lines = _base_lines()
    taken = 0
    for n in range(600):
        mutant = _mutate(rng, rng.choice(lines))
        before = fastjson.stats()["lines_fast"]
        fast = _ingest(mutant, True)
        taken += fastjson.stats()["lines_fast"] - before
        assert _state(fast) == _state(_ingest(mutant, False)), f"mutant #{n}: {mutant[:300]!r}"
    assert taken > 0  # some mutants stay in the fast path's shape, so both branches are tried
