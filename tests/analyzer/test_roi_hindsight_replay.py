"""The example's hindsight check (examples/audit.py ``hindsight_replay``) replays as the
projection does: requests with their marks, through the servers that ran calls.

With a plain bool array and one replica it replayed every cache hit and every request that failed
before a model call as a full call, on one server where two had served: the "replay model alone"
check then read as a model error that the projection does not have.
"""

from __future__ import annotations

from typing import Any

import pytest
from _analysis_fixtures import MS, T0, FixtureDb

from inferaudit_sdk import semconv

audit = pytest.importorskip("examples.audit")


def _two_device_db() -> FixtureDb:
    """Two GPUs of one process; a request every 10 ms, every other one answered from the cache
    in 1 ms, every 25th failing after a 3 s queue timeout with no model call; the computed ones
    take 30 ms, alternately on each GPU (no queue)."""
    db = FixtureDb()
    db.resource(1, gpu_model="NVIDIA A10G", gpu_count=2, service_name="svc",
                price_usd_per_hour=1.0)
    for i in range(240):
        arr = T0 + i * 10 * MS
        if i % 25 == 24:
            db.request(arr, arr + 3000 * MS, input_tokens=60, error_type="Timeout",
                       status_code=2)
            continue
        if i % 2:
            db.request(arr, arr + 1 * MS, input_tokens=60, output_tokens=12, cache_hit=True)
            continue
        tin, tout = 40 + i % 23, 8 + i % 7
        end = arr + (24 + tout // 2) * MS
        r = db.request(arr, end, input_tokens=tin, output_tokens=tout)
        db.batch(arr, end, [r], parent=r, device_time_ns=int((end - arr) * 0.9),
                 batch_input_tokens=tin, batch_output_tokens=tout,
                 attributes={semconv.DEVICE_ID: str((i // 2) % 2)})
    return db


class _Store:
    def __init__(self, db: FixtureDb) -> None:
        self.con = db.con

    def close(self) -> None:
        pass


def test_hindsight_replays_hits_failures_and_servers_as_the_projection_does(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import inferaudit_analyzer.store as store

    dbs = {"seq": _two_device_db(), "bat": _two_device_db()}

    def load(paths: list[str], **_: Any) -> _Store:
        return _Store(dbs[str(paths[0])])

    monkeypatch.setattr(store, "load_store", load)
    out = audit.hindsight_replay("seq", "bat", max_batch=2)
    assert out["replicas"] == 2
    # the timeouts are out of the measured p95 (successful requests, as the report's baseline)
    assert out["measured_p95_ms"] < 100
    assert out["replayed_p95_ms"] == pytest.approx(out["measured_p95_ms"], rel=0.15)
