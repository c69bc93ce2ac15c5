"""How many servers the replay runs (data.serving_devices): a brief overlap is not a replica.

The instantaneous maximum counted a rolling restart (the new process's first call while the old
one's last still ran) and back-to-back calls on one device a microsecond apart as two servers for
the whole window: the $/replica halved and right_size claimed a 50 % bill saving for a replica
that never existed.
"""

from __future__ import annotations

from _analysis_fixtures import MS, T0, FixtureDb

from inferaudit_analyzer.analyze import analyze_connection
from inferaudit_analyzer.roi import data
from inferaudit_analyzer.roi.interventions import Knobs
from inferaudit_analyzer.roi.model import roi_section
from inferaudit_analyzer.views import create_views
from inferaudit_sdk import semconv


def _call(start: float, end: float, resource: int, device: str | None) -> tuple:
    # rows shaped like CALLS_SQL: start at 0, end at 11, resource at 12, device at 13
    return (start, end - start, None, 1, 1, 1, None, None, None, "m", start, end, resource,
            device, 1)


def test_back_to_back_calls_a_microsecond_apart_are_one_server() -> None:
    jitter = [_call(i * 50 * MS - (1000 if i else 0), (i + 1) * 50 * MS, 1, "0")
              for i in range(100)]
    assert data.serving_devices(jitter) == 1
    # and where no device is recorded
    assert data.serving_devices([(*c[:13], None, 1) for c in jitter]) == 1


def test_a_rolling_restart_is_one_server() -> None:
    old = [_call(i * 50 * MS, (i + 1) * 50 * MS, 1, "0") for i in range(50)]
    warm_up = [_call(49.5 * 50 * MS, 49.6 * 50 * MS, 2, "0")]
    new = [_call(i * 50 * MS, (i + 1) * 50 * MS, 2, "0") for i in range(51, 100)]
    assert data.serving_devices(old + warm_up + new) == 1


def test_servers_side_by_side_for_the_whole_window_still_count() -> None:
    two_hosts = ([_call(i * 50 * MS, (i + 1) * 50 * MS, 1, "0") for i in range(100)]
                 + [_call(i * 50 * MS + MS, (i + 1) * 50 * MS, 2, "0") for i in range(100)])
    assert data.serving_devices(two_hosts) == 2
    # a host whose workers record no device: the calls it had in flight most of the time
    threads = [_call(i * 10 * MS + k * MS, i * 10 * MS + k * MS + 9 * MS, 1, None)
               for i in range(100) for k in range(3)]
    assert data.serving_devices(threads) == 3


def _restart_db() -> FixtureDb:
    """One server restarted half way (resource 1, then 2), the new process's warm-up call
    running while the old one's last call does."""
    db = FixtureDb()
    for rid in (1, 2):
        db.resource(rid, gpu_model="NVIDIA A10G", gpu_count=1, service_name="svc",
                    price_usd_per_hour=1.0)
    for i in range(120):
        arr = T0 + i * 150 * MS
        rid = 1 if i < 60 else 2
        r = db.request(arr, arr + 50 * MS, input_tokens=100 + i % 37, output_tokens=20 + i % 11,
                       resource_id=rid)
        db.batch(arr, arr + 50 * MS, [r], parent=r, device_time_ns=45 * MS, resource_id=rid,
                 batch_input_tokens=100 + i % 37, batch_output_tokens=20 + i % 11)
    last = T0 + 59 * 150 * MS
    r = db.request(last + 10 * MS, last + 15 * MS, input_tokens=10, output_tokens=1,
                   resource_id=2)
    db.batch(last + 10 * MS, last + 15 * MS, [r], parent=r, device_time_ns=4 * MS,
             resource_id=2, batch_input_tokens=10, batch_output_tokens=1)
    return db


def test_a_restart_overlap_gives_right_size_no_replica_to_drop() -> None:
    db = _restart_db()
    rep = analyze_connection(db.con)
    roi = roi_section(db.con, rep, Knobs(max_batch=4, slo_p95_ms=200), bootstrap=0)
    assert roi["baseline"]["scenario"]["replicas"] == 1
    assert roi["price"]["usd_per_replica_hour"] == rep["price"]["usd_per_hour"]
    assert "right_size" not in [it["intervention"] for it in roi["roadmap"]]
    assert all(it["impact"]["bill_saving_ratio"] == 0.0 for it in roi["roadmap"])


def test_observe_tells_recorded_devices_from_workers_that_record_none() -> None:
    """The batches view defaults a missing device id to '0'; the ROI model reads the id as the
    span recorded it, so a worker that records none is counted from its calls in flight, and
    one that records its device by the devices it ran calls on."""
    def db(device_ids: bool) -> FixtureDb:
        d = FixtureDb()
        d.resource(1, gpu_model="NVIDIA A10G", gpu_count=2, service_name="svc")
        for i in range(60):
            for k in range(2):  # two calls in flight most of the time
                start = T0 + i * 40 * MS + k * 5 * MS
                r = d.request(start, start + 30 * MS, input_tokens=50, output_tokens=10)
                attrs = {semconv.DEVICE_ID: str(k)} if device_ids else {}
                d.batch(start, start + 30 * MS, [r], parent=r, device_time_ns=28 * MS,
                        attributes=attrs)
        create_views(d.con)
        return d

    assert data.observe(db(device_ids=True).con).serving_devices == 2
    assert data.observe(db(device_ids=False).con).serving_devices == 2


def _threads_db(device_ids: bool) -> FixtureDb:
    """Three worker threads on one GPU, calls side by side, with or without a device id."""
    d = FixtureDb()
    d.resource(1, gpu_model="NVIDIA A10G", gpu_count=1, service_name="svc",
               price_usd_per_hour=1.0)
    for i in range(60):
        for k in range(3):
            start = T0 + i * 10 * MS + k * MS
            tin, tout = 50 + (i * 7 + k) % 13, 10 + i % 5
            r = d.request(start, start + 9 * MS, input_tokens=tin, output_tokens=tout)
            attrs = {semconv.DEVICE_ID: "0"} if device_ids else {}
            d.batch(start, start + 9 * MS, [r], parent=r, device_time_ns=8 * MS,
                    attributes=attrs, batch_input_tokens=tin, batch_output_tokens=tout)
    return d


def test_recording_a_device_id_does_not_serialise_calls_side_by_side_on_it() -> None:
    """A device id says which GPU ran a call, not that the process ran one call at a time: with
    it, three threads' calls were replayed on one server (p95 977 ms against 9 measured)."""
    for ids in (False, True):
        d = _threads_db(ids)
        create_views(d.con)
        assert data.observe(d.con).serving_devices == 3, ids
        roi = roi_section(d.con, analyze_connection(d.con), Knobs(max_batch=1), bootstrap=0)
        assert roi["baseline"]["scenario"]["replicas"] == 3
        assert roi["baseline"]["replayed"]["latency_ms"]["p95"] < 20
        assert roi["price"]["idle_paid_devices"] == 0  # the one GPU served
