"""A field of the wrong JSON type is one error that says so, on the compiled and Python paths.

``"attributes": "nope"`` on a resource used to give one error per character ("resource
attribute #0..#3: TypeError: string indices must be integers"): a string iterated as if it were
the list. Each case below names the field, keeps what can be kept, and reads the same with the
compiled fast path on and off.
"""

from __future__ import annotations

import json

import pytest
from _ingest_fixtures import json_span as _span

from inferaudit_analyzer.ingest import fastjson
from inferaudit_analyzer.store import load_store


def _traces(*rs):
    return {"resourceSpans": list(rs)}


def _rs(*spans, **over):
    return {"scopeSpans": [{"spans": list(spans)}], **over}


def _metrics(**over):
    point = {"timeUnixNano": "5000", "asDouble": 0.5}
    metric = {"name": "hw.gpu.utilization", "gauge": {"dataPoints": [point]}}
    rm = {"scopeMetrics": [{"metrics": [metric]}]}
    for path, value in over.items():
        node = rm
        keys = path.split(".")
        for k in keys[:-1]:
            node = node[k][0] if isinstance(node[k], list) else node[k]
        node[keys[-1]] = value
    return {"resourceMetrics": [rm]}


# (name, request, spans kept, the phrase the one error carries)
CASES = [
    ("resource attributes a string", _traces(_rs(_span(0), resource={"attributes": "nope"})),
     1, "resource attributes must be a list, got str"),
    ("resource a string", _traces(_rs(_span(0), resource="nope")),
     1, "resource must be an object, got str"),
    ("resource attribute a string", _traces(_rs(_span(0), resource={"attributes": ["x"]})),
     1, "resource attribute #0: TypeError: must be an object with a key and a value, got str"),
    ("resourceSpans entry a string", _traces("nope", _rs(_span(1))),
     1, "resourceSpans #0 must be an object, got str"),
    ("scopeSpans a string", _traces({"scopeSpans": "nope"}, _rs(_span(1))),
     1, "resourceSpans #0: scopeSpans must be a list, got str"),
    ("scopeSpans an object", _traces({"scopeSpans": {"spans": [_span(0)]}}, _rs(_span(1))),
     1, "resourceSpans #0: scopeSpans must be a list, got dict"),
    ("scopeSpans entry a string", _traces({"scopeSpans": ["nope", {"spans": [_span(1)]}]}),
     1, "resourceSpans #0: scopeSpans #0 must be an object, got str"),
    ("spans a string", _traces({"scopeSpans": [{"spans": "nope"}, {"spans": [_span(1)]}]}),
     1, "scopeSpans #0: spans must be a list, got str"),
    ("scope a string", _traces({"scopeSpans": [{"scope": "nope", "spans": [_span(0)]}]}),
     1, "scope must be an object, got str; read as unnamed"),
    ("span attributes a string", _traces(_rs(_span(0, attributes="nope"), _span(1))),
     1, "attributes must be a list, got str"),
    ("span status a string", _traces(_rs(_span(0, status="nope"), _span(1))),
     1, "status must be an object, got str"),
    ("span links a string", _traces(_rs(_span(0, links="nope"), _span(1))),
     1, "links must be a list, got str"),
    ("span link a string", _traces(_rs(_span(0, links=["x"]), _span(1))),
     1, "link #0 must be an object, got str"),
]

METRIC_CASES = [
    ("metric resource attributes a string", _metrics(resource={"attributes": "nope"}), 1,
     "resource attributes must be a list, got str"),
    ("scopeMetrics a string", _metrics(scopeMetrics="nope"), 0,
     "scopeMetrics must be a list, got str"),
    ("metrics a string", _metrics(**{"scopeMetrics.metrics": "nope"}), 0,
     "metrics must be a list, got str"),
    ("dataPoints a string", _metrics(**{"scopeMetrics.metrics.gauge": {"dataPoints": "nope"}}),
     0, "dataPoints must be a list, got str"),
]


def _read(tmp_path, monkeypatch, fast: str, lines: list[dict]):
    monkeypatch.setenv(fastjson.ENV_SWITCH, fast)
    d = tmp_path / f"fast{fast}"
    d.mkdir(exist_ok=True)
    p = d / "t.jsonl"
    p.write_bytes(b"".join(json.dumps(x).encode() + b"\n" for x in lines))
    with load_store([p], cache=False, require_spans=False) as store:
        points = store.con.execute("SELECT count(*) FROM metric_points").fetchone()[0]
        return store.spans, points, [e.message for e in store.errors]


def _paths() -> list[str]:
    return ["1", "0"] if fastjson.available() else ["0"]


@pytest.mark.parametrize(("name", "request_", "kept", "phrase"), CASES,
                         ids=[c[0] for c in CASES])
def test_a_traces_field_of_the_wrong_type_is_one_error(tmp_path, monkeypatch, name, request_,
                                                       kept, phrase):
    seen = {fast: _read(tmp_path, monkeypatch, fast, [request_]) for fast in _paths()}
    spans, _, errors = seen["0"]
    assert spans == kept
    assert len(errors) == 1, errors
    assert phrase in errors[0]
    assert all(v == seen["0"] for v in seen.values()), seen  # both paths alike
    # the same line twice: the paths still agree (a resource's fault is reported once)
    twice = {fast: _read(tmp_path, monkeypatch, fast, [request_, request_])
             for fast in _paths()}
    assert twice["0"][0] == 2 * kept
    assert all(v == twice["0"] for v in twice.values()), twice


@pytest.mark.parametrize(("name", "request_", "kept", "phrase"), METRIC_CASES,
                         ids=[c[0] for c in METRIC_CASES])
def test_a_metrics_field_of_the_wrong_type_is_one_error(tmp_path, monkeypatch, name, request_,
                                                        kept, phrase):
    good = _traces(_rs(_span(0)))
    seen = {fast: _read(tmp_path, monkeypatch, fast, [good, request_]) for fast in _paths()}
    _, points, errors = seen["0"]
    assert points == kept
    assert len(errors) == 1, errors
    assert phrase in errors[0]
    assert all(v == seen["0"] for v in seen.values()), seen
