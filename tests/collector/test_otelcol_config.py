"""The upstream Collector's YAML: pipeline wiring, privacy processor, and the on-disk layout.

The Collector binary is not a test dependency: the config is parsed and its wiring asserted.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from inferaudit_sdk import semconv

yaml = pytest.importorskip("yaml")

CONFIG = Path(__file__).resolve().parents[2] / "collector" / "otelcol-config.yaml"
FILE_ONLY = CONFIG.with_name("otelcol-config-fileonly.yaml")
_ENV_REF = re.compile(r"\$\{([^}]*)\}")


@pytest.fixture(scope="module")
def cfg() -> dict[str, Any]:
    return yaml.safe_load(CONFIG.read_text())


def _values(node: Any) -> list[str]:
    """Every string value of a parsed config (comments are gone: only what the Collector sees)."""
    if isinstance(node, dict):
        return [s for v in node.values() for s in _values(v)]
    if isinstance(node, list):
        return [s for v in node for s in _values(v)]
    return [node] if isinstance(node, str) else []


def _env_used(doc: dict[str, Any]) -> set[str]:
    return {m for v in _values(doc) for m in re.findall(r"\$\{env:([A-Z_]+)", v)}


def test_every_pipeline_is_otlp_in_memory_limiter_first_batch_last_and_fans_out(cfg) -> None:
    pipelines = cfg["service"]["pipelines"]
    assert set(pipelines) == {"traces", "metrics"}
    for name, p in pipelines.items():
        assert p["receivers"] == ["otlp"], name
        assert p["processors"][0] == "memory_limiter", name
        assert p["processors"][-1] == "batch", name
        kinds = [e.split("/")[0] for e in p["exporters"]]
        assert "file" in kinds and ({"otlp", "otlphttp"} & set(kinds)), name


def test_every_component_used_is_defined_and_every_defined_one_used(cfg) -> None:
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    for p in cfg["service"]["pipelines"].values():
        for section in used:
            used[section] |= set(p[section])
    for section, names in used.items():
        assert names == set(cfg[section]), section
    assert set(cfg["service"]["extensions"]) == set(cfg["extensions"])


def test_receiver_ports_and_limits(cfg) -> None:
    protocols = cfg["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"].endswith(":4317")
    assert protocols["http"]["endpoint"].endswith(":4318")
    assert protocols["http"]["max_request_body_size"] == 16 * 1024 * 1024
    assert protocols["grpc"]["max_recv_msg_size_mib"] == 16


def test_backend_endpoint_comes_from_the_environment(cfg) -> None:
    backend = cfg["exporters"]["otlp/backend"]
    assert backend["endpoint"].startswith("${env:INFERAUDIT_BACKEND_ENDPOINT")
    assert backend["retry_on_failure"]["enabled"] and backend["sending_queue"]["enabled"]
    # Every substitution uses the Collector's ${env:NAME[:-default]} form.
    for ref in _ENV_REF.findall(CONFIG.read_text()):
        assert re.fullmatch(r"env:[A-Z_]+(:-[^}]*)?", ref), ref


def test_strip_content_deletes_exactly_the_semconv_content_attributes(cfg) -> None:
    proc = cfg["processors"]["attributes/strip_content"]
    deleted = {a["key"] for a in proc["actions"] if a["action"] == "delete"}
    assert deleted == {semconv.GEN_AI_INPUT_MESSAGES, semconv.GEN_AI_OUTPUT_MESSAGES}
    assert "attributes/strip_content" in cfg["service"]["pipelines"]["traces"]["processors"]


def test_file_exporters_write_what_the_analyzer_reads(cfg) -> None:
    files = {n: e for n, e in cfg["exporters"].items() if n.startswith("file")}
    assert {Path(e["path"].split("}")[-1]).name for e in files.values()} == {
        "traces.jsonl", "metrics.jsonl"}
    for name, e in files.items():
        # JSON lines: "format: json" and no "compression" (with compression the exporter
        # writes length-prefixed zstd frames, which are not JSON lines).
        assert e["format"] == "json" and "compression" not in e, name
        assert e["rotation"]["max_megabytes"] > 0 and e["rotation"]["localtime"] is False
    assert {e["path"].rsplit("/", 1)[0] for e in files.values()} == {
        "${env:INFERAUDIT_TRACE_DIR:-/var/lib/inferaudit}"}


def test_collector_rotated_names_are_picked_up_by_the_analyzer(tmp_path: Path) -> None:
    """The file exporter's live and rotated names (lumberjack) next to ours: all are read."""
    store_mod = pytest.importorskip("inferaudit_analyzer.store")
    from collector_helpers import make_spans
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from inferaudit_collector.decode import encode_traces

    names = ["traces.jsonl", "traces-2026-12-03T05-02-14.173.jsonl",
             "traces-2026-12-03T05-02-15.001-size.jsonl",
             "traces-2026-12-03T06-02-14.000-time.jsonl",
             "traces-20261203T050214-123-000001.jsonl"]
    for seed, name in enumerate(names):
        (tmp_path / name).write_bytes(encode_traces(encode_spans(make_spans(7, seed=seed))).line)
    with store_mod.load_store([tmp_path], cache=False) as store:
        assert store.spans == 7 * len(names)


def test_kubernetes_examples_mount_the_config_and_expose_the_otlp_ports() -> None:
    k8s = CONFIG.parent / "k8s"
    docs = {p.name: yaml.safe_load(p.read_text()) for p in k8s.glob("*.yaml")}
    assert set(docs) == {"deployment.yaml", "service.yaml", "pvc.yaml", "networkpolicy.yaml"}
    pod = docs["deployment.yaml"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert "contrib" in container["image"]
    assert {p["containerPort"] for p in container["ports"]} >= {4317, 4318}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["INFERAUDIT_TRACE_DIR"] == "/data"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["data"] == "/data" and mounts["config"] == "/etc/otelcol-contrib"
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols["data"]["persistentVolumeClaim"]["claimName"] == (
        docs["pvc.yaml"]["metadata"]["name"])
    # Every INFERAUDIT_* variable the pod sets is one the Collector config reads (outside
    # comments), and every variable the config needs without a default is set.
    cfg = yaml.safe_load(CONFIG.read_text())
    used = _env_used(cfg)
    required = {m for v in _values(cfg) for m in re.findall(r"\$\{env:([A-Z_]+)\}", v)}
    assert required <= set(env), required - set(env)
    assert {n for n in env if n.startswith("INFERAUDIT_")} <= used
    assert {p["port"] for p in docs["service.yaml"]["spec"]["ports"]} == {4317, 4318}


# -- the backend must never starve, loop into, or block the file copy ----------------------
def test_backend_endpoint_has_no_default(cfg) -> None:
    """A default of localhost:4317 is this Collector's own receiver: TLS failures retried for
    minutes, or (insecure) every batch looped back and written to the files again, forever."""
    assert cfg["exporters"]["otlp/backend"]["endpoint"] == "${env:INFERAUDIT_BACKEND_ENDPOINT}"


def test_backend_queue_is_bounded_in_items_and_gives_up_in_about_a_minute(cfg) -> None:
    """queue_size counts requests by default, and one request holds up to
    send_batch_max_size items: 1000 of them is 2 M spans, enough to trip memory_limiter,
    which then refuses data bound for the files as well."""
    backend = cfg["exporters"]["otlp/backend"]
    q = backend["sending_queue"]
    assert q["enabled"] and q["sizer"] == "items"
    size = q["queue_size"]
    default = int(re.fullmatch(r"\$\{env:[A-Z_]+:-(\d+)\}", size).group(1)) if isinstance(
        size, str) else size
    assert 0 < default <= 200_000
    assert default < 100 * cfg["processors"]["batch"]["send_batch_max_size"]
    elapsed = backend["retry_on_failure"]["max_elapsed_time"]
    assert re.fullmatch(r"\d+s", elapsed) and int(elapsed[:-1]) <= 120


def test_no_header_is_sent_empty_when_its_variable_is_unset(cfg) -> None:
    for name, exporter in cfg["exporters"].items():
        for header, value in (exporter.get("headers") or {}).items():
            assert not str(value).endswith(":-}"), f"{name}: header {header} empty by default"


def test_memory_limiter_accepts_any_limit(cfg) -> None:
    """A fixed spike_limit_mib must stay below limit_mib, so any INFERAUDIT_MEMORY_LIMIT_MIB
    at or below it would fail at start; the default (20 % of the limit) always fits."""
    ml = cfg["processors"]["memory_limiter"]
    assert "spike_limit_mib" not in ml
    assert ml["limit_mib"].startswith("${env:INFERAUDIT_MEMORY_LIMIT_MIB")


def test_file_only_variant_is_the_same_collector_without_the_backend(cfg) -> None:
    fo = yaml.safe_load(FILE_ONLY.read_text())
    for section in ("receivers", "processors", "extensions"):
        assert fo[section] == cfg[section], section
    files = {n: e for n, e in cfg["exporters"].items() if n.startswith("file/")}
    assert fo["exporters"] == files
    for name, p in cfg["service"]["pipelines"].items():
        fp = fo["service"]["pipelines"][name]
        assert fp["receivers"] == p["receivers"] and fp["processors"] == p["processors"]
        assert fp["exporters"] == [e for e in p["exporters"] if e.startswith("file/")], name
    assert set(fo["service"]["pipelines"]) == set(cfg["service"]["pipelines"])
    assert fo["service"]["extensions"] == cfg["service"]["extensions"]
    assert not {v for v in _env_used(fo) if v.startswith("INFERAUDIT_BACKEND")}
    for ref in _ENV_REF.findall(FILE_ONLY.read_text()):
        assert re.fullmatch(r"env:[A-Z_]+(:-[^}]*)?", ref), ref


def test_docs_name_the_rotated_files_the_exporter_writes_and_the_minimum_version() -> None:
    doc = (CONFIG.parents[1] / "docs" / "collector.md").read_text()
    assert "-size.jsonl" in doc and "-time.jsonl" in doc
    assert "0.123" in doc and "otelcol-config-fileonly.yaml" in doc
