"""The docs name what the code defines: a name added in code but not documented fails here.

Each test collects the names from the code itself (semconv constants, finding ids, intervention
ids, view columns, environment variables) and checks that the page that documents them mentions
every one, so the reference pages cannot fall behind silently.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from inferaudit_analyzer import schema, views
from inferaudit_analyzer.roi import interventions
from inferaudit_sdk import semconv

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
ANALYZER = ROOT / "analyzer" / "inferaudit_analyzer"


def _doc(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def _backticked(text: str) -> set[str]:
    """Every token inside backticks, plus the identifier-like parts of each span."""
    out: set[str] = set()
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)  # fenced blocks are not names
    for span in re.findall(r"`([^`]+)`", text):  # inline code may wrap across lines
        out.add(span.strip())
        for part in re.split(r"[^A-Za-z0-9_.]+", span):
            out.add(part)
            out.update(part.split("."))  # `price.list_price_note` names list_price_note too
    return out


def _missing(names: set[str], text: str) -> list[str]:
    """Names that appear nowhere in ``text`` as a backticked token."""
    tokens = _backticked(text)
    return sorted(n for n in names if n not in tokens)


# --------------------------------------------------------------------------------------------
# semconv -> docs/semantic-conventions.md
# --------------------------------------------------------------------------------------------
def semconv_names() -> dict[str, str]:
    """Public str constants of semconv whose value is a dotted name (attribute/metric/event)."""
    return {k: v for k, v in vars(semconv).items()
            if not k.startswith("_") and k.isupper() and isinstance(v, str) and "." in v}


def semconv_enum_values() -> dict[str, str]:
    """Public str constants without a dot (enumerated values, scope name, event name)."""
    return {k: v for k, v in vars(semconv).items()
            if not k.startswith("_") and k.isupper() and isinstance(v, str) and "." not in v
            and k != "SCHEMA_VERSION"}


def test_collectors_see_known_names():
    """Guard against a collector that silently finds nothing (the tests below would pass)."""
    names = semconv_names()
    assert names["DEVICE_CALLS"] == "inferaudit.device.calls"
    assert names["GEN_AI_USAGE_INPUT_TOKENS"] == "gen_ai.usage.input_tokens"
    assert len(names) > 100
    assert semconv_enum_values()["DROP_REASON_SHUTDOWN"] == "shutdown"
    assert "unbatched_serving" in finding_ids()
    assert "kernel_launch_overhead" in finding_ids()
    assert "INFERAUDIT_TRACE_DIR" in env_vars()


def test_every_semconv_name_is_documented():
    text = _doc("semantic-conventions.md")
    names = semconv_names()
    missing = _missing(set(names.values()), text)
    assert not missing, ("docs/semantic-conventions.md does not mention these semconv values "
                         f"(add each with type, unit, writer, meaning): {missing}")


def test_every_semconv_enum_value_is_documented():
    text = _doc("semantic-conventions.md")
    vals = semconv_enum_values()
    missing = sorted(f"{k}={v}" for k, v in vals.items() if v not in _backticked(text))
    assert not missing, f"docs/semantic-conventions.md lacks these enumerated values: {missing}"


_NAME_RE = re.compile(r"`((?:inferaudit|gen_ai|hw|llm)\.[a-z0-9_]+(?:\.[a-z0-9_]+)*)`")
# Pages whose attribute names must all exist in semconv (no stale or misspelt names).
_NAME_PAGES = ("semantic-conventions.md", "data-model.md", "analysis.md",
               "device-instrumentation.md", "configuration.md")


@pytest.mark.parametrize("page", _NAME_PAGES)
def test_docs_name_no_attribute_semconv_lacks(page):
    known = {v for v in vars(semconv).values() if isinstance(v, str)}
    stale = sorted(set(_NAME_RE.findall(_doc(page))) - known)
    assert not stale, f"docs/{page} names attributes that semconv.py does not define: {stale}"


# --------------------------------------------------------------------------------------------
# finding ids and intervention ids -> docs/report-schema.md
# --------------------------------------------------------------------------------------------
_ID_RE = re.compile(r"""\bid\s*=\s*["']([a-z][a-z0-9_]*)["']""")


def finding_ids() -> set[str]:
    """Literal ``id="..."`` of every Finding the span and Kineto analyses construct."""
    files = [*sorted((ANALYZER / "analyses").glob("*.py")), ANALYZER / "kineto" / "findings.py"]
    ids: set[str] = set()
    for f in files:
        src = f.read_text(encoding="utf-8")
        if "Finding(" in src:
            ids.update(_ID_RE.findall(src))
    return ids


def test_every_finding_id_is_documented():
    text = _doc("report-schema.md")
    missing = _missing(finding_ids(), text)
    assert not missing, f"docs/report-schema.md does not list these finding ids: {missing}"


def test_every_intervention_id_is_documented():
    assert interventions.IDS, "the intervention registry is empty"
    for doc in ("report-schema.md", "roi-model.md"):
        missing = _missing(set(interventions.IDS), _doc(doc))
        assert not missing, f"docs/{doc} does not list these intervention ids: {missing}"


def test_report_schema_names_the_sections_the_report_has():
    """Top-level keys assembled in report_json / cli_report and the roadmap item keys."""
    text = _doc("report-schema.md")
    tokens = _backticked(text)
    src = (ANALYZER / "report_json.py").read_text(encoding="utf-8")
    body = src[src.index("report = {"):src.index("**sections")]
    top = set(re.findall(r'"([a-z_]+)":', body))
    top |= {"redundancy", "routing", "copies", "roadmap", "roi", "plots", "validation"}
    assert "bottleneck" in top and "kernels" in top
    missing = sorted(top - tokens)
    assert not missing, f"docs/report-schema.md lacks top-level keys: {missing}"
    road = (ANALYZER / "roi" / "roadmap.py").read_text(encoding="utf-8")
    item = road[road.index("roadmap.append({"):road.index("swap = _avoided_swap")]
    plan = road[road.index("def _plan_json"):road.index("def build_roadmap")]
    keys = set(re.findall(r'"([a-z_]+)":', item + plan))
    assert {"rank", "interval", "assumptions", "intervention", "risk"} <= keys
    missing = sorted(keys - tokens)
    assert not missing, f"docs/report-schema.md lacks roadmap[] keys: {missing}"


# --------------------------------------------------------------------------------------------
# views and tables -> docs/data-model.md
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def empty_store():
    con = duckdb.connect()
    for sql in schema.create_all_sql():
        con.execute(sql)
    views.create_views(con)
    yield con
    con.close()


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> set[str]:
    return {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}


@pytest.mark.parametrize("view", views.VIEW_NAMES)
def test_every_view_column_is_documented(empty_store, view):
    text = _doc("data-model.md")
    section = text[text.index("## Derived views"):]
    cols = _columns(empty_store, view)
    assert len(cols) > 10
    missing = _missing(cols, section)
    assert not missing, f"docs/data-model.md ('Derived views') lacks {view} columns: {missing}"


@pytest.mark.parametrize("table", sorted(schema.TABLES))
def test_every_table_column_is_documented(empty_store, table):
    missing = _missing(_columns(empty_store, table), _doc("data-model.md"))
    assert not missing, f"docs/data-model.md lacks {table} columns: {missing}"


# --------------------------------------------------------------------------------------------
# INFERAUDIT_* environment variables -> docs/configuration.md
# --------------------------------------------------------------------------------------------
_ENV_RE = re.compile(r"\bINFERAUDIT_[A-Z0-9_]*[A-Z0-9]\b")
_ENV_DIRS = ("src", "analyzer", "collector", "examples", "scripts", "bench")
_ENV_SUFFIXES = {".py", ".sh", ".yaml", ".yml", ".toml", ".cfg", ""}


def env_vars() -> set[str]:
    found: set[str] = set()
    for d in _ENV_DIRS:
        base = ROOT / d
        if not base.is_dir():
            continue
        for f in base.rglob("*"):
            if f.is_file() and f.suffix in _ENV_SUFFIXES and "__pycache__" not in f.parts:
                try:
                    found.update(_ENV_RE.findall(f.read_text(encoding="utf-8")))
                except (UnicodeDecodeError, OSError):
                    continue
    return found


def test_every_env_var_is_documented():
    missing = _missing(env_vars(), _doc("configuration.md"))
    assert not missing, f"docs/configuration.md does not document: {missing}"


# --------------------------------------------------------------------------------------------
# a real report -> docs/report-schema.md
# --------------------------------------------------------------------------------------------
SHARED = ROOT / ".." / "shared"
KINETO_TRACE = SHARED / "traces" / "tracelens" / "vllm_decode_cudagraph_mi300x_bs32.json.gz"
# Keys whose children are data (model names, route names, batch sizes, runtime API names) or
# per-finding evidence (documented with each finding in docs/analysis.md).
_DATA_KEYED = {"by_model", "by_route", "histogram", "api_counts", "evidence"}


def _report_keys(x: object, out: dict[str, str], where: str = "") -> None:
    if isinstance(x, dict):
        for k, v in x.items():
            out.setdefault(str(k), where or "(top level)")
            if k not in _DATA_KEYED:
                _report_keys(v, out, f"{where}.{k}" if where else str(k))
    elif isinstance(x, list):
        for v in x[:5]:
            _report_keys(v, out, f"{where}[]")


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    """`inferaudit report --json` over SDK-shaped OTLP spans plus a real Kineto trace."""
    import json

    from inferaudit_analyzer.cli_report import report_main
    from tests.analyzer.test_cli import _write_otlp

    tmp = tmp_path_factory.mktemp("docs_report")
    _write_otlp(tmp / "traces-1.jsonl", n=30)
    paths = [str(tmp / "traces-1.jsonl")]
    if KINETO_TRACE.is_file():
        paths.append(str(KINETO_TRACE))
    out = tmp / "report.json"
    assert report_main([*paths, "--json", str(out), "--bootstrap", "0", "--no-cache"]) == 0
    return json.loads(out.read_text())


def test_every_report_key_is_documented(full_report):
    assert full_report["roadmap"], "the fixture should produce a roadmap (unbatched serving)"
    keys: dict[str, str] = {}
    _report_keys({k: v for k, v in full_report.items() if k != "kernels"}, keys)
    tokens = _backticked(_doc("report-schema.md"))
    missing = sorted(f"{where}: {k}" for k, where in keys.items() if k not in tokens)
    assert not missing, f"docs/report-schema.md does not mention these report keys: {missing}"


def test_every_kernels_key_is_documented(full_report):
    if not KINETO_TRACE.is_file():
        pytest.skip(f"shared Kineto trace not found: {KINETO_TRACE}")
    assert full_report["kernels"] and "temporal_breakdown" in full_report["kernels"]
    keys: dict[str, str] = {}
    _report_keys(full_report["kernels"], keys, "kernels")
    tokens = _backticked(_doc("report-schema.md"))
    missing = sorted(f"{where}: {k}" for k, where in keys.items() if k not in tokens)
    assert not missing, f"docs/report-schema.md does not mention these kernels keys: {missing}"
