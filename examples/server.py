"""A small asyncio text-generation server, instrumented the way a user would instrument theirs.

Requests go into one queue; one worker drains it. Two serving modes:

- ``sequential``: the worker serves one request at a time (what most first deployments do).
  Each model call is a batch span with one member, a child of its request span.
- ``batched``: dynamic batching. The worker takes up to ``max_batch`` waiting requests (after
  waiting at most ``batch_timeout_s`` for more to arrive), left-pads them, and runs ONE
  ``generate`` for all of them. The batch span is a root span linked to every member request.

Each request is handled by :meth:`InferenceServer.complete`, decorated with ``@ia.audited``, so its
span covers queueing plus service; queue time, exact token counts (from ids) and the requested
``max_tokens`` are recorded on it with ``ia.record``. With ``instrument=True`` (the default) the
torch model is also passed to ``ia.instrument_model``, so each batch span carries the device
time of its call (CPU time on this CPU-only example). The model runs on a dedicated single thread
(``run_in_executor``) so the event loop keeps accepting arrivals while a batch is on the CPU,
which is what lets a queue, and hence a batch, build up.

torch threads: :meth:`InferenceServer.start` calls ``torch.set_num_threads(torch_threads)``
(default 1). It is process-wide; we pin it so service times are predictable on a small shared
machine and the sequential-vs-batched comparison is not confounded by intra-op parallelism.
"""

from __future__ import annotations

import asyncio
import contextvars
import itertools
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch

import inferaudit_sdk as ia
from examples.tiny_gpt2 import MODEL_NAME, TinyGPT2
from inferaudit_sdk import semconv

PROVIDER = "inferaudit.example"
MODES = ("sequential", "batched")
FINISH_REASON_LENGTH = "length"


@dataclass(frozen=True)
class Completion:
    """What a client gets back. Times in seconds, measured server-side."""

    request_id: int
    output_ids: list[int]
    queue_time_s: float
    service_time_s: float
    batch_size: int


@dataclass
class _Job:
    request_id: int
    prompt_ids: list[int]
    max_new_tokens: int
    handle: Any  # ia.RequestHandle | None
    context: contextvars.Context
    future: asyncio.Future[Completion]
    enqueued_ns: int = field(default_factory=time.perf_counter_ns)
    # Streaming only: each new token id is put here (from the model thread, thread-safely).
    stream: asyncio.Queue[int | None] | None = None
    loop: asyncio.AbstractEventLoop | None = None


class InferenceServer:
    """In-process text-generation server over :class:`TinyGPT2`.

    Use from one event loop: ``await start()``, any number of concurrent ``await complete(...)``,
    then ``await stop()`` (serves what is queued, then stops).
    """

    def __init__(
        self,
        model: TinyGPT2,
        *,
        mode: str = "sequential",
        max_batch: int = 8,
        batch_timeout_s: float = 0.0,
        torch_threads: int = 1,
        instrument: bool = True,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"InferenceServer: mode must be one of {MODES}, got {mode!r}")
        if max_batch < 1:
            raise ValueError(f"InferenceServer: max_batch must be >= 1, got {max_batch}")
        self.model = model
        self.mode = mode
        self.max_batch = max_batch if mode == "batched" else 1
        self.batch_timeout_s = batch_timeout_s
        self.torch_threads = torch_threads
        self.instrument = instrument
        self.batch_sizes: list[int] = []  # one entry per model call, for summaries and tests
        self.call_durations_ns: list[int] = []  # one per model call: the run's busy time
        self._ids = itertools.count()
        self._queue: asyncio.Queue[_Job | None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        torch.set_num_threads(self.torch_threads)
        if self.instrument:
            # Device (here: CPU) time and copies of each model call, added to its batch span.
            ia.instrument_model(self.model.model, model=MODEL_NAME)
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._worker = asyncio.create_task(self._run_worker(), name="inference-worker")

    async def stop(self) -> None:
        if self._queue is None or self._worker is None:
            return
        await self._queue.put(None)
        await self._worker
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        self._queue = self._worker = self._executor = None

    async def __aenter__(self) -> InferenceServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @ia.audited(model=MODEL_NAME, operation=semconv.OPERATION_TEXT_COMPLETION, provider=PROVIDER)
    async def complete(
        self, prompt_ids: Sequence[int], max_new_tokens: int, *, request_id: int | None = None
    ) -> Completion:
        """Generate exactly ``max_new_tokens`` tokens after ``prompt_ids`` (greedy).

        The request span (opened by ``@audited``) lasts from arrival to response; exceptions
        from the model are recorded on it and re-raised here.
        """
        job = self._new_job(prompt_ids, max_new_tokens, request_id, stream=False)
        assert self._queue is not None
        await self._queue.put(job)
        result = await job.future
        ia.record(
            output_token_ids=result.output_ids,
            queue_time_s=result.queue_time_s,
            finish_reasons=[FINISH_REASON_LENGTH],
            response_model=MODEL_NAME,
        )
        return result

    @ia.audited(model=MODEL_NAME, operation=semconv.OPERATION_TEXT_COMPLETION, provider=PROVIDER)
    async def complete_stream(
        self, prompt_ids: Sequence[int], max_new_tokens: int, *, request_id: int | None = None
    ) -> AsyncIterator[int]:
        """Like :meth:`complete`, but yields each token id as soon as the model produces it, so
        the request span gets time to first token and time per output token. Works in both
        modes; a model failure is raised from the iteration."""
        job = self._new_job(prompt_ids, max_new_tokens, request_id, stream=True)
        assert self._queue is not None and job.stream is not None
        await self._queue.put(job)
        received: list[int] = []
        while len(received) < max_new_tokens:
            token = await job.stream.get()
            if token is None:  # the model call failed: raise its error
                await job.future
                raise RuntimeError("model call ended without a result")  # not reached
            received.append(token)
            yield token
        result = await job.future
        ia.record(
            output_token_ids=received,
            queue_time_s=result.queue_time_s,
            finish_reasons=[FINISH_REASON_LENGTH],
            response_model=MODEL_NAME,
        )

    def _new_job(
        self, prompt_ids: Sequence[int], max_new_tokens: int, request_id: int | None, stream: bool
    ) -> _Job:
        """Validate a request and record what is known on arrival (inside its request span)."""
        if self._queue is None:
            raise RuntimeError("InferenceServer: call start() first")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        prompt = list(prompt_ids)
        ia.record(prompt_token_ids=prompt, max_tokens=max_new_tokens)
        loop = asyncio.get_running_loop()
        return _Job(
            request_id=next(self._ids) if request_id is None else request_id,
            prompt_ids=prompt,
            max_new_tokens=max_new_tokens,
            handle=ia.current_request(),
            # The request's context (its span is current there); sequential mode runs the model
            # call inside it so the batch span becomes the request span's child.
            context=contextvars.copy_context(),
            future=loop.create_future(),
            stream=asyncio.Queue() if stream else None,
            loop=loop,
        )

    async def _run_worker(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            job = await self._queue.get()
            if job is None:
                break
            jobs = [job]
            if self.mode == "batched":
                stopping = await self._gather_batch(jobs)
            started_ns = time.perf_counter_ns()
            try:
                outputs = await loop.run_in_executor(self._executor, self._run_model, jobs)
            except Exception as exc:  # the model's failure is each member's failure
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(exc)
                    if j.stream is not None:
                        j.stream.put_nowait(None)  # wakes a streaming reader
                continue
            done_ns = time.perf_counter_ns()
            self.batch_sizes.append(len(jobs))
            self.call_durations_ns.append(done_ns - started_ns)
            for j, out in zip(jobs, outputs, strict=True):
                if not j.future.done():
                    j.future.set_result(
                        Completion(
                            request_id=j.request_id,
                            output_ids=out,
                            queue_time_s=(started_ns - j.enqueued_ns) / 1e9,
                            service_time_s=(done_ns - started_ns) / 1e9,
                            batch_size=len(jobs),
                        )
                    )

    async def _gather_batch(self, jobs: list[_Job]) -> bool:
        """Add waiting jobs (and, with a timeout, late arrivals) up to ``max_batch``.
        Returns True when the stop sentinel was seen."""
        assert self._queue is not None
        deadline = time.perf_counter() + self.batch_timeout_s
        while len(jobs) < self.max_batch:
            try:
                if self._queue.empty() and self.batch_timeout_s > 0:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    nxt = await asyncio.wait_for(self._queue.get(), remaining)
                else:
                    nxt = self._queue.get_nowait()
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
            if nxt is None:
                return True
            jobs.append(nxt)
        return False

    def _run_model(self, jobs: list[_Job]) -> list[list[int]]:
        """Runs on the model thread. Sequential: inside the request's context (batch span is
        its child). Batched: in an empty context (the batch span is a root linked to all)."""
        if self.mode == "sequential":
            return jobs[0].context.run(self._model_call, jobs)
        return contextvars.Context().run(self._model_call, jobs)

    def _model_call(self, jobs: list[_Job]) -> list[list[int]]:
        members = [j.handle for j in jobs if j.handle is not None]
        prompts = [j.prompt_ids for j in jobs]
        with ia.batch(
            members,
            model=MODEL_NAME,
            operation=semconv.OPERATION_TEXT_COMPLETION,
            batch_size=len(jobs),
        ) as b:
            streaming = any(j.stream is not None for j in jobs)
            outputs = self.model.generate(
                prompts,
                [j.max_new_tokens for j in jobs],
                on_step=self._stream_step(jobs) if streaming else None,
            )
            b.record(
                input_tokens=sum(len(p) for p in prompts),
                padded_tokens=len(prompts) * max(len(p) for p in prompts),
                output_tokens=sum(len(o) for o in outputs),
            )
        return outputs

    @staticmethod
    def _stream_step(jobs: list[_Job]) -> Callable[[int, list[int]], None]:
        """The per-step callback that forwards row i's token to job i's stream (until it has
        its max_new_tokens). Runs on the model thread; hands over via the job's loop."""

        def on_step(step: int, tokens: list[int]) -> None:
            for job, token in zip(jobs, tokens, strict=True):
                if job.stream is not None and job.loop is not None and step < job.max_new_tokens:
                    job.loop.call_soon_threadsafe(job.stream.put_nowait, token)

        return on_step
