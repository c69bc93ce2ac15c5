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
_ENV_REF = re.compile(r"\$\{([^}]*)\}")


@pytest.fixture(scope="module")
def cfg() -> dict[str, Any]:
    return yaml.safe_load(CONFIG.read_text())


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
             "traces-20261203T050214-123-000001.jsonl"]
    for seed, name in enumerate(names):
        (tmp_path / name).write_bytes(encode_traces(encode_spans(make_spans(7, seed=seed))).line)
    with store_mod.load_store([tmp_path], cache=False) as store:
        assert store.spans == 21


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
    # Every INFERAUDIT_* variable the pod sets is one the Collector config reads.
    used = set(re.findall(r"env:([A-Z_]+)", CONFIG.read_text()))
    assert {n for n in env if n.startswith("INFERAUDIT_")} <= used
    assert {p["port"] for p in docs["service.yaml"]["spec"]["ports"]} == {4317, 4318}
