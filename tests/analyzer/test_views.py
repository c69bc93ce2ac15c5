"""The requests / batches views: which span is the request, and how batch device time is shared."""

from __future__ import annotations

from _analysis_fixtures import MS, T0, FixtureDb

from inferaudit_analyzer.views import create_views


def _requests(db: FixtureDb) -> dict[str, dict]:
    create_views(db.con)
    cur = db.con.execute("SELECT * FROM requests")
    names = [d[0] for d in cur.description]
    return {r[1]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}


def test_server_parent_gives_latency_and_arrival():
    db = FixtureDb()
    tid, server = db.span(start_ns=T0, end_ns=T0 + 100 * MS, kind=2, name="POST /generate")
    _, req = db.request(T0 + 30 * MS, T0 + 90 * MS, trace_id=tid, parent_span_id=server)
    _, lone = db.request(T0, T0 + 20 * MS)
    rows = _requests(db)
    assert rows[req]["latency_ns"] == 100 * MS
    assert rows[req]["arrival_ns"] == T0
    assert rows[req]["model_ns"] == 60 * MS
    assert rows[req]["enclosed"] is True
    assert rows[lone]["latency_ns"] == 20 * MS and rows[lone]["enclosed"] is False


def test_internal_parent_is_not_the_request():
    db = FixtureDb()
    tid, internal = db.span(start_ns=T0, end_ns=T0 + 100 * MS, kind=1, name="helper")
    _, req = db.request(T0 + 10 * MS, T0 + 50 * MS, trace_id=tid, parent_span_id=internal)
    assert _requests(db)[req]["latency_ns"] == 40 * MS


def test_foreign_genai_span_counts_unless_inside_our_request():
    db = FixtureDb()
    # a foreign GenAI span (no role) with usage, standalone: a request
    _, foreign = db.span(start_ns=T0, end_ns=T0 + 5 * MS, role=None, operation="chat",
                         request_model="x", input_tokens=3, output_tokens=4)
    # a foreign span nested in our request span: the request span is the request
    tid, ours = db.request(T0, T0 + 50 * MS, input_tokens=3, output_tokens=4)
    db.span(start_ns=T0 + 1, end_ns=T0 + 40 * MS, trace_id=tid, parent_span_id=ours, role=None,
            operation="chat", request_model="m", input_tokens=3, output_tokens=4)
    # a span without usage is not a request
    db.span(start_ns=T0, end_ns=T0 + 5 * MS, role=None, operation="chat")
    assert set(_requests(db)) == {foreign, ours}


def test_device_time_is_shared_by_tokens():
    db = FixtureDb()
    a = db.request(T0, T0 + 100 * MS, input_tokens=30, output_tokens=10)   # weight 40
    b = db.request(T0, T0 + 100 * MS, input_tokens=100, output_tokens=20)  # weight 120
    db.batch(T0 + 10 * MS, T0 + 60 * MS, [a, b], device_time_ns=80 * MS)
    db.batch(T0 + 60 * MS, T0 + 90 * MS, [b], device_time_ns=20 * MS)
    rows = _requests(db)
    assert rows[a[1]]["device_ns"] == 20 * MS  # 80 * 40/160
    assert rows[b[1]]["device_ns"] == 60 * MS + 20 * MS
    assert rows[b[1]]["batches"] == 2
    total = sum(r["device_ns"] for r in rows.values())
    assert total == 100 * MS  # shares add up to the batches' device time


def test_unlinked_child_batch_belongs_to_parent_request_and_equal_split_without_tokens():
    db = FixtureDb()
    req = db.request(T0, T0 + 50 * MS)
    db.span(start_ns=T0 + 5 * MS, end_ns=T0 + 45 * MS, trace_id=req[0],
                       parent_span_id=req[1], role="batch", device_type="cuda",
                       device_time_ns=30 * MS, resource_id=1)
    x = db.request(T0, T0 + 50 * MS)
    y = db.request(T0, T0 + 50 * MS)
    db.batch(T0, T0 + 10 * MS, [x, y], device_time_ns=10 * MS)
    rows = _requests(db)
    assert rows[req[1]]["device_ns"] == 30 * MS
    assert rows[x[1]]["device_ns"] == rows[y[1]]["device_ns"] == 5 * MS


def test_request_without_batches_falls_back_to_its_own_device_time():
    db = FixtureDb()
    r = db.request(T0, T0 + 50 * MS, device_time_ns=7 * MS)
    assert _requests(db)[r[1]]["device_ns"] == 7 * MS


def test_batches_view_device_time_fallbacks_and_members():
    db = FixtureDb()
    a, b = db.request(T0, T0 + 9 * MS), db.request(T0, T0 + 9 * MS)
    _, gpu = db.batch(T0, T0 + 8 * MS, [a, b], device_time_ns=5 * MS,
                      attributes={"inferaudit.device.id": 3})
    _, cpu = db.batch(T0, T0 + 8 * MS, [a], device_type="cpu", cpu_time_ns=12 * MS)
    _, wall = db.batch(T0, T0 + 8 * MS, [b], device_type="cuda")
    create_views(db.con)
    rows = {r[0]: r[1:] for r in db.con.execute(
        "SELECT span_id, device_ns, members, device_id FROM batches").fetchall()}
    assert rows[gpu] == (5 * MS, 2, "3")
    assert rows[cpu] == (12 * MS, 1, "cpu")  # the host's cores, never CUDA index 0
    assert rows[wall] == (8 * MS, 1, "0")


def test_batches_view_names_the_gpu_by_its_hw_id_where_the_span_has_one():
    db = FixtureDb()
    r = db.request(T0, T0 + 9 * MS)
    uuid = "GPU-0a0a0a0a-0000-4000-8000-00000000000a"
    _, named = db.batch(T0, T0 + 8 * MS, [r],
                        attributes={"inferaudit.device.id": 0, "hw.id": uuid})
    _, bare = db.batch(T0, T0 + 8 * MS, [r], attributes={"inferaudit.device.id": 0})
    create_views(db.con)
    rows = {r[0]: r[1:] for r in db.con.execute(
        "SELECT span_id, device_id, hw_id FROM batches").fetchall()}
    assert rows[named] == ("0", uuid)
    # a call of the same process and index without hw.id is that GPU, not a second device
    assert rows[bare] == ("0", uuid)


def test_batches_view_takes_no_hw_id_where_the_process_index_pair_names_two():
    db = FixtureDb()
    r = db.request(T0, T0 + 9 * MS)
    gpu_a = "GPU-0a0a0a0a-0000-4000-8000-00000000000a"
    gpu_b = "GPU-0b0b0b0b-0000-4000-8000-00000000000b"
    for hw in (gpu_a, gpu_b):  # CUDA_VISIBLE_DEVICES changed under one process id
        db.batch(T0, T0 + 8 * MS, [r], attributes={"inferaudit.device.id": 0, "hw.id": hw})
    _, bare = db.batch(T0, T0 + 8 * MS, [r], attributes={"inferaudit.device.id": 0})
    _, cpu = db.batch(T0, T0 + 8 * MS, [r], device_type="cpu", cpu_time_ns=MS,
                      attributes={"hw.id": gpu_a})  # a stale GPU id on a CPU call
    _, other = db.batch(T0, T0 + 8 * MS, [r], resource_id=2,
                        attributes={"inferaudit.device.id": 0})
    create_views(db.con)
    rows = {r[0]: r[1:] for r in db.con.execute(
        "SELECT span_id, device_id, hw_id FROM batches").fetchall()}
    assert rows[bare] == ("0", None)
    assert rows[cpu] == ("cpu", None)
    assert rows[other] == ("0", None)  # another process's index 0 is not named by this one


def test_nested_request_span_counts_for_the_enclosing_request():
    db = FixtureDb()
    outer = db.request(T0, T0 + 100 * MS)  # the handler, no usage recorded on it
    inner = db.request(T0 + 10 * MS, T0 + 90 * MS, trace_id=outer[0], parent_span_id=outer[1],
                       input_tokens=7, output_tokens=3)
    other = db.request(T0, T0 + 100 * MS, input_tokens=7, output_tokens=3)
    db.batch(T0 + 20 * MS, T0 + 60 * MS, [inner, other], device_time_ns=40 * MS)
    rows = _requests(db)
    assert set(rows) == {outer[1], other[1]}
    assert rows[outer[1]]["input_tokens"] == 7 and rows[outer[1]]["output_tokens"] == 3
    assert rows[outer[1]]["device_ns"] == rows[other[1]]["device_ns"] == 20 * MS
    assert rows[outer[1]]["latency_ns"] == 100 * MS
