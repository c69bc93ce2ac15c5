"""A small pool of parser processes, fed one work unit at a time over pipes.

Plain subprocesses (``python -m inferaudit_analyzer.ingest.pool``) rather than
``multiprocessing``: no fork of a process that may hold DuckDB or Arrow threads, and no re-import
of the caller's ``__main__`` (so a script without an ``if __name__ == "__main__"`` guard works).
Units go out one at a time, so a fast worker takes more of them; results come back as one JSON
line per unit. A worker that dies is reported as an error on its unit, never a hang.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

from inferaudit_analyzer.ingest.worker import UnitResult, WorkUnit, run_unit


def _result_to_json(r: UnitResult) -> str:
    return json.dumps({"unit": dataclasses.asdict(r.unit), "parts": r.parts, "spans": r.spans,
                       "links": r.links, "metric_points": r.metric_points,
                       "errors": r.errors, "lines": r.lines, "lines_lost": r.lines_lost,
                       "spans_lost": r.spans_lost})


def _result_from_json(text: str) -> UnitResult:
    d = json.loads(text)
    return UnitResult(WorkUnit(**d["unit"]), d["parts"], d["spans"], d["links"],
                      d["metric_points"], [tuple(e) for e in d["errors"]], d["lines"],
                      d["lines_lost"], d["spans_lost"])


def run_pool(units: list[WorkUnit], workers: int) -> Iterator[UnitResult]:
    """Yield each unit's result as it finishes (any order)."""
    todo = sorted(units, key=lambda u: -((u.end or 1 << 40) - u.start))
    results: queue.Queue[tuple[int, str | None]] = queue.Queue()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    procs: list[subprocess.Popen[str]] = []
    current: dict[int, WorkUnit] = {}

    def reader(i: int, stream: Any) -> None:
        for line in stream:
            results.put((i, line))
        results.put((i, None))

    def feed(i: int) -> None:
        p = procs[i]
        assert p.stdin is not None
        if todo:
            u = todo.pop(0)
            current[i] = u
            try:
                p.stdin.write(json.dumps(dataclasses.asdict(u)) + "\n")
                p.stdin.flush()
            except OSError:  # the worker died: its reader's EOF reports the unit lost
                pass
        else:
            current.pop(i, None)
            with contextlib.suppress(OSError):
                p.stdin.close()

    try:
        for i in range(min(workers, len(units))):
            p = subprocess.Popen([sys.executable, "-m", "inferaudit_analyzer.ingest.pool"],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                 env=env)
            procs.append(p)
            threading.Thread(target=reader, args=(i, p.stdout), daemon=True).start()
            feed(i)
        alive = len(procs)
        while alive:
            i, line = results.get()
            if line is None:
                alive -= 1
                lost = current.pop(i, None)
                if lost is not None:  # the worker died mid-unit
                    code = procs[i].wait()
                    yield UnitResult(lost, errors=[(None, lost.start, f"parser process exited "
                                                    f"with status {code} on this part")],
                                     lines_lost=1)
                    if todo:  # its remaining work goes to an inline run
                        rest, todo[:] = list(todo), []
                        for u in rest:
                            yield run_unit(u)
                continue
            yield _result_from_json(line)
            feed(i)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


class _NoPandas:
    """Import hook that hides pandas from a parser process.

    pyarrow imports pandas (when installed) on its first conversion of a Python list, to check
    for pandas objects: about a second of CPU per process, for nothing, since a worker only ever
    converts lists. Installed in worker processes only, never in the caller's.
    """

    @staticmethod
    def find_spec(name: str, path: Any = None, target: Any = None) -> None:
        if name == "pandas" or name.startswith("pandas."):
            raise ModuleNotFoundError(f"{name} is not used by parser processes", name=name)


def _main() -> None:
    sys.meta_path.insert(0, _NoPandas)  # type: ignore[arg-type]
    gc.disable()  # rows are acyclic: the cyclic GC would only re-walk them
    for line in sys.stdin:
        unit = WorkUnit(**json.loads(line))
        sys.stdout.write(_result_to_json(run_unit(unit)) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    _main()
