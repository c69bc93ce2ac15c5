"""End to end: the main job replays a plan in both modes and writes OTLP JSON lines traces."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from examples.loadgen import LengthScale, ReplayPlan, ReplayRequest, ScaleFactors, build_plan
from examples.main_job import (
    AUTO_REQUESTS_MAX,
    AUTO_REQUESTS_MIN,
    ScenarioResult,
    auto_requests,
    count_spans,
    main,
    run_scenario_subprocess,
)
from examples.tiny_gpt2 import TinyGPT2
from examples.workload import Workload, WorkloadRequest, load_workload
from inferaudit_sdk import semconv

HEX32 = re.compile(r"^[0-9a-f]{32}$")
HEX16 = re.compile(r"^[0-9a-f]{16}$")


def _attr(span: dict[str, Any], key: str) -> Any:
    for kv in span.get("attributes", ()):
        if kv["key"] == key:
            value = kv["value"]
            if "intValue" in value:
                return int(value["intValue"])
            return next(iter(value.values()))
    return None


def _read_spans(trace_dir: Path) -> list[dict[str, Any]]:
    files = sorted(trace_dir.glob("traces-*.jsonl"))
    assert files, f"no traces-*.jsonl in {trace_dir}"
    spans = []
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            doc = json.loads(line)  # every line is one complete JSON document
            for rs in doc.get("resourceSpans", ()):
                assert "resource" in rs
                for ss in rs["scopeSpans"]:
                    spans.extend(ss["spans"])
    return spans


def _burst_plan(n: int = 20) -> ReplayPlan:
    """Half the requests trickle in, the other half arrive at once (a burst)."""
    reqs = []
    for i in range(n):
        arrival = 0.02 * i if i < n // 2 else 0.02 * (n // 2)
        reqs.append(ReplayRequest(i, arrival, 3 + (i * 5) % 17, 2 + i % 5, 100 + i, 20 + i))
    scale = ScaleFactors("test:burst", n, LengthScale(), 1.0, 0.7, 0.01, 70.0, 50.0)
    return ReplayPlan(tuple(reqs), scale)


@pytest.fixture(scope="module")
def both_modes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ReplayPlan]:
    out = tmp_path_factory.mktemp("main_job")
    plan = _burst_plan()
    plan_path = plan.save(out / "burst-plan.json")
    code = main(
        ["--plan", str(plan_path), "--out", str(out), "--mode", "both", "--no-analyze",
         "--quiet", "--max-batch", "8", "--batch-timeout-ms", "10", "--isolation", "inline"]
    )
    assert code == 0
    return out, plan


@pytest.mark.slow
def test_request_spans_carry_exact_token_counts(both_modes: tuple[Path, ReplayPlan]) -> None:
    out, plan = both_modes
    want = Counter((r.prompt_tokens, r.output_tokens) for r in plan.requests)
    for mode in ("sequential", "batched"):
        result = ScenarioResult.load(out / mode / "scenario.json")
        assert result.n_requests == len(plan.requests) and result.n_errors == 0
        span_s = plan.requests[-1].arrival_s - plan.requests[0].arrival_s
        assert result.busy_s > 0
        assert result.achieved_utilisation == pytest.approx(result.busy_s / span_s)
        spans = _read_spans(out / mode / "traces")
        requests = [s for s in spans if _attr(s, semconv.SPAN_ROLE) == semconv.ROLE_REQUEST]
        inp, outp = semconv.GEN_AI_USAGE_INPUT_TOKENS, semconv.GEN_AI_USAGE_OUTPUT_TOKENS
        got = Counter((_attr(s, inp), _attr(s, outp)) for s in requests)
        assert got == want, mode
        assert sum(_attr(s, semconv.GEN_AI_USAGE_OUTPUT_TOKENS) for s in requests) == (
            result.output_tokens
        )
        for s in spans:
            assert HEX32.match(s["traceId"]) and HEX16.match(s["spanId"])
            assert int(s["endTimeUnixNano"]) >= int(s["startTimeUnixNano"]) > 0
            assert isinstance(s["kind"], int)
        assert count_spans(out / mode / "traces") == result.spans_by_role
        manifest = json.loads((out / mode / "run-manifest.json").read_text(encoding="utf-8"))
        assert manifest["mode"] == mode and manifest["scale"]["source"] == "test:burst"


@pytest.mark.slow
def test_batch_spans_link_their_members(both_modes: tuple[Path, ReplayPlan]) -> None:
    out, plan = both_modes
    sizes: dict[str, list[int]] = {}
    for mode in ("sequential", "batched"):
        spans = _read_spans(out / mode / "traces")
        requests = {
            s["spanId"]: s for s in spans if _attr(s, semconv.SPAN_ROLE) == semconv.ROLE_REQUEST
        }
        batches = [s for s in spans if _attr(s, semconv.SPAN_ROLE) == semconv.ROLE_BATCH]
        linked = [link["spanId"] for b in batches for link in b.get("links", ())]
        assert sorted(linked) == sorted(requests), mode  # each request in exactly one batch
        for b in batches:
            members = [link["spanId"] for link in b["links"]]
            assert _attr(b, semconv.BATCH_SIZE) == len(members)
            assert _attr(b, semconv.BATCH_OUTPUT_TOKENS) == sum(
                _attr(requests[m], semconv.GEN_AI_USAGE_OUTPUT_TOKENS) for m in members
            )
            if mode == "sequential":
                assert b.get("parentSpanId") == members[0]
        sizes[mode] = [_attr(b, semconv.BATCH_SIZE) for b in batches]
    assert set(sizes["sequential"]) == {1}
    assert max(sizes["batched"]) > 1  # the burst was batched
    assert len(sizes["batched"]) < len(plan.requests)


def test_plan_scales_time_to_the_target_load() -> None:
    trace = Workload(
        tuple(WorkloadRequest(t, p, o) for t, p, o in [(10.0, 800, 100), (10.5, 5000, 900),
                                                       (12.0, 20, 3), (14.0, 1600, 16)]),
        source="test:tiny",
    )
    lengths = LengthScale(prompt_scale=0.1, prompt_cap=200, output_scale=0.1, output_cap=50)
    plan = build_plan(trace, None, lengths=lengths, target_utilisation=0.5, probe_service_s=0.2)
    s = plan.scale
    assert s.offered_rps == pytest.approx(0.5 / 0.2)
    assert s.trace_rps == pytest.approx(3 / 4.0)
    assert [r.arrival_s for r in plan.requests] == pytest.approx(
        [0.0, 0.5 * s.time_scale, 2.0 * s.time_scale, 4.0 * s.time_scale]
    )
    # Replayed mean rate equals the offered rate.
    assert (len(plan.requests) - 1) / plan.requests[-1].arrival_s == pytest.approx(s.offered_rps)
    assert [r.prompt_tokens for r in plan.requests] == [80, 200, lengths.prompt_min, 160]
    assert [r.output_tokens for r in plan.requests] == [10, 50, lengths.output_min, 2]
    assert ReplayPlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan


def test_plan_from_the_workload_probes_the_model() -> None:
    """The default path of the job: a probe measures the model, the plan follows from it."""
    model = TinyGPT2()
    workload = load_workload(12)
    lengths = LengthScale(prompt_cap=24, output_cap=4)
    plan = build_plan(workload, model, lengths=lengths, target_utilisation=0.7, probe_requests=4)
    s = plan.scale
    assert s.source == workload.source and s.n_requests == 12 == len(plan.requests)
    assert s.probe_service_s > 0
    assert s.offered_rps == pytest.approx(0.7 / s.probe_service_s)
    assert all(r.prompt_tokens <= 24 and r.output_tokens <= 4 for r in plan.requests)


@pytest.mark.slow
def test_scenario_in_a_child_process(tmp_path: Path) -> None:
    """The default isolation of ``--mode both``: ``python -m examples.main_job`` per scenario
    (here streaming, so the client also measures time to first token). A previous run's
    traces in the same place are replaced, not audited along with this run's."""
    plan = _burst_plan(6)
    plan_path = plan.save(tmp_path / "plan.json")
    stale = tmp_path / "batched" / "traces" / "traces-previous-run.jsonl"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}\n", encoding="utf-8")
    result = run_scenario_subprocess(
        "batched", plan_path, out_dir=tmp_path / "batched", extra_args=["--stream"]
    )
    assert result.n_requests == 6 and result.n_errors == 0
    assert result.spans_by_role.get(semconv.ROLE_REQUEST) == 6
    assert sum(result.batch_sizes) == 6
    assert Path(result.trace_dir) == tmp_path / "batched" / "traces"
    assert len(result.ttfts_s) == 6
    assert all(0 < t <= lat for t, lat in zip(result.ttfts_s, result.latencies_s, strict=True))
    assert not stale.exists()
    spans = _read_spans(Path(result.trace_dir))
    requests = [s for s in spans if _attr(s, semconv.SPAN_ROLE) == semconv.ROLE_REQUEST]
    assert len(requests) == 6
    assert all(_attr(s, semconv.REQUEST_TIME_TO_FIRST_TOKEN_NS) > 0 for s in requests)


def test_default_request_count_fits_the_time_budget() -> None:
    # 0.1 s per request at 50 % load: one arrives every 0.2 s, so 30 s hold 150.
    assert auto_requests(0.1, 0.5, 30.0) == 150
    assert auto_requests(10.0, 0.5, 30.0) == AUTO_REQUESTS_MIN  # slow machine: still a sample
    assert auto_requests(1e-4, 0.5, 30.0) == AUTO_REQUESTS_MAX
