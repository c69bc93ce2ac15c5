"""Kernel types, the kernel-type breakdown, top kernels and unfused elementwise chains.

Type rules (first match wins; see docs/kineto-analysis.md):

1. ``memcpy`` / ``memset``: the op's category (``gpu_memcpy`` / ``gpu_memset``), not its name.
2. ``communication``: NCCL/RCCL/Gloo/MSCCL kernels and custom all-reduce kernels (vLLM's
   ``cross_device_reduce``, ``quickreduce``, ...). HTA matches ``^nccl``; we add ROCm and
   custom collectives.
3. ``attention``: flash/fmha/paged/MLA attention kernels (``flash``, ``fmha``, ``attn``,
   ``attention``, ``mha``, ``mla_``).
4. ``gemm``: GEMM/GEMV and convolution kernels (implicit GEMM): ``gemm``, ``gemv``, ``matmul``,
   ``cutlass``, ``cublas``, ``hipblaslt``, ``nvjet``, ``xmma``, rocBLAS/Tensile ``Cijk_``,
   ``wvSplitK``, cuDNN ``conv``/``scudnn``/``dgrad``/``wgrad``/``fprop``, ``volta_*``/
   ``ampere_*`` tile kernels.
5. ``reduction``: ``reduce``, ``norm`` (layer/RMS/batch), ``softmax``, ``sum``, ``topk``,
   ``sort``, ``scan``/``cumsum``, ``argmax``, ``welford``, Triton ``triton_red_``/``triton_per_``.
6. ``elementwise``: ATen ``elementwise``/``vectorized``/``unrolled`` kernels, Triton
   ``triton_poi_``, activations, copies/fills/casts, index/gather/scatter, rotary embeddings,
   layout transforms (``nchwToNhwc``, ``transpose``, ``permute``).
7. ``other``.

Rules run first on the *base name* (without ``void``, template arguments and parameters, so a
functor in a template argument cannot mislead them), then on the full name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .events import KIND_KERNEL, KIND_MEMCPY, KIND_MEMSET, TraceEvents

__all__ = [
    "KERNEL_TYPES",
    "MIN_ELEMENTWISE_CHAIN",
    "TOP_KERNELS",
    "classify_kernel",
    "elementwise_chains",
    "kernel_type_breakdown",
    "op_types",
    "top_kernels",
]

KERNEL_TYPES = (
    "gemm",
    "attention",
    "elementwise",
    "reduction",
    "communication",
    "memcpy",
    "memset",
    "other",
)
T_GEMM, T_ATTN, T_ELEM, T_RED, T_COMM, T_MEMCPY, T_MEMSET, T_OTHER = range(len(KERNEL_TYPES))

TOP_KERNELS = 10  # as HTA's get_gpu_kernel_breakdown(num_kernels=10)
# Three or more back-to-back elementwise kernels on one stream: the smallest run where fusing
# saves at least two launches and two round trips through DRAM.
MIN_ELEMENTWISE_CHAIN = 3

_RULES: tuple[tuple[int, re.Pattern[str]], ...] = (
    (
        T_COMM,
        re.compile(
            # "all"/"reduce" must start a word (snake_case or CamelCase): small_gather_kernel
            # is an elementwise gather, not an all-gather.
            r"nccl|rccl|gloo|msccl"
            r"|(?:(?<![a-z])all|(?-i:All))_?(?:reduce|gather|to_?all)"
            r"|(?:(?<![a-z])reduce|(?-i:Reduce))_?scatter"
            r"|cross_device_reduce|quickreduce|custom_ar",
            re.I,
        ),
    ),
    (T_ATTN, re.compile(r"flash|fmha|attn|attention|(^|[^a-z])mha|mla_|paged_", re.I)),
    (
        T_GEMM,
        re.compile(
            r"gemm|gemv|matmul|cutlass|cublas|hipblaslt|nvjet|xmma|^Cijk_|Custom_Cijk"
            r"|wvSplitK|conv(?!ert)|scudnn|dgrad|wgrad|fprop"
            r"|(volta|ampere|turing|sm\d+)_\w*_(nn|nt|tn|tt)\b|_mm_",
            re.I,
        ),
    ),
    (
        T_RED,
        re.compile(
            r"reduce|reduction|norm|softmax|sum|topk|sort|scan|argmax|argmin|welford"
            r"|triton_red_|triton_per_|bn_fw|bn_bw|_mean|_var",
            re.I,
        ),
    ),
    (
        T_ELEM,
        re.compile(
            r"elementwise|vectorized|unrolled|triton_poi_|pointwise|act_and_mul|silu|gelu"
            r"|relu|sigmoid|tanh|copy|fill|cast|convert|index|gather|scatter|rotary|rope"
            r"|embedding|CatArray|where|masked|clamp|add_|mul_|_add|_mul|quant"
            r"|nchwToNhwc|nhwcToNchw|transpose|permute",
            re.I,
        ),
    ),
)
_cache: dict[str, int] = {}


def _base_name(name: str) -> str:
    s = name[5:] if name.startswith("void ") else name
    cut = len(s)
    for ch in "<(":
        i = s.find(ch)
        if 0 < i < cut:
            cut = i
    return s[:cut]


def _classify_index(name: str) -> int:
    t = _cache.get(name)
    if t is None:
        t = T_OTHER
        for text in (_base_name(name), name):
            hit = next((typ for typ, rx in _RULES if rx.search(text)), None)
            if hit is not None:
                t = hit
                break
        _cache[name] = t
    return t


def classify_kernel(name: str) -> str:
    """The kernel type (one of :data:`KERNEL_TYPES`, never memcpy/memset) of a kernel name."""
    return KERNEL_TYPES[_classify_index(name)]


# Low-precision formats a kernel's name spells out (CUTLASS/Triton/vLLM kernels name their
# operand types: ``_matmul_ogs_NNT_bf16xbf16xmxfp4``, ``marlin``, ``w8a8``), lowest first.
_PRECISIONS = (
    ("fp4", re.compile(r"fp4|e2m1", re.I)),  # mxfp4, nvfp4 too
    ("int4", re.compile(r"int4|w4a(?:8|16)|awq|gptq|marlin", re.I)),
    ("fp8", re.compile(r"fp8|e4m3|e5m2", re.I)),
    ("int8", re.compile(r"int8|w8a(?:8|16)", re.I)),
)


def low_precision(name: str) -> str | None:
    """The lowest sub-16-bit format a kernel's name says it computes in (``fp4``, ``int4``,
    ``fp8``, ``int8``), or None: a model whose hot GEMM already runs in one gains little more
    from quantising."""
    return next((p for p, rx in _PRECISIONS if rx.search(name)), None)


def op_types(ev: TraceEvents) -> np.ndarray:
    """Type index (into :data:`KERNEL_TYPES`) of every GPU op of ``ev``."""
    name_types = np.asarray([_classify_index(n) for n in ev.names], dtype=np.int8)
    out = name_types[ev.gpu_name] if ev.names else np.zeros(0, dtype=np.int8)
    out = out.copy()
    out[ev.gpu_kind == KIND_MEMCPY] = T_MEMCPY
    out[ev.gpu_kind == KIND_MEMSET] = T_MEMSET
    return out


def kernel_type_breakdown(ev: TraceEvents, types: np.ndarray) -> list[dict[str, object]]:
    """Per type: op count, summed duration and its share of all GPU-op time (0-100).

    Summed durations (as ``nsys stats``), not HTA's overlap-split union: concurrent kernels
    each keep their own time, so the shares add to 100.
    """
    dur = ev.gpu_dur_ns
    total = int(dur.sum())
    rows: list[dict[str, object]] = []
    for t, label in enumerate(KERNEL_TYPES):
        mask = types == t
        n = int(mask.sum())
        if not n:
            continue
        t_ns = int(dur[mask].sum())
        rows.append(
            {
                "type": label,
                "count": n,
                "time_ns": t_ns,
                "time_pct": round(100.0 * t_ns / total, 3) if total else 0.0,
            }
        )
    rows.sort(key=lambda r: -int(r["time_ns"]))  # type: ignore[call-overload]
    return rows


def top_kernels(
    ev: TraceEvents, types: np.ndarray, n: int = TOP_KERNELS
) -> list[dict[str, object]]:
    """The ``n`` kernels (memcpy/memset excluded) with the largest summed GPU time; ``time_pct``
    is of all GPU-op time, as in :func:`kernel_type_breakdown`, so a kernel's share never
    exceeds its type's."""
    mask = ev.gpu_kind == KIND_KERNEL
    if not mask.any():
        return []
    names = ev.gpu_name[mask]
    dur = ev.gpu_dur_ns[mask]
    total = int(ev.gpu_dur_ns.sum())
    uniq, first, inv = np.unique(names, return_index=True, return_inverse=True)
    sums = np.bincount(inv, weights=dur).astype(np.int64)
    counts = np.bincount(inv)
    mins = np.full(uniq.size, np.iinfo(np.int64).max)
    np.minimum.at(mins, inv, dur)
    maxs = np.zeros(uniq.size, dtype=np.int64)
    np.maximum.at(maxs, inv, dur)
    type_of = types[mask][first]
    order = np.argsort(-sums, kind="stable")[:n]
    rows = []
    for i in order:
        name_idx = int(uniq[i])
        rows.append(
            {
                "name": ev.names[name_idx],
                "type": KERNEL_TYPES[int(type_of[i])],
                "count": int(counts[i]),
                "total_ns": int(sums[i]),
                "mean_ns": int(sums[i] // counts[i]),
                "min_ns": int(mins[i]),
                "max_ns": int(maxs[i]),
                "time_pct": round(100.0 * int(sums[i]) / total, 3) if total else 0.0,
            }
        )
    return rows


@dataclass(frozen=True)
class ElementwiseChains:
    """Runs of >= :data:`MIN_ELEMENTWISE_CHAIN` consecutive elementwise kernels per stream."""

    chains: int
    kernels_in_chains: int
    time_in_chains_ns: int
    longest_chain: int
    kernel_time_ns: int
    elementwise_kernels: int

    @property
    def time_ratio(self) -> float:
        return self.time_in_chains_ns / self.kernel_time_ns if self.kernel_time_ns else 0.0

    def to_json(self) -> dict[str, object]:
        return {
            "chains": self.chains,
            "kernels_in_chains": self.kernels_in_chains,
            "time_in_chains_ns": self.time_in_chains_ns,
            "longest_chain": self.longest_chain,
            "elementwise_kernels": self.elementwise_kernels,
            "time_in_chains_ratio": round(self.time_ratio, 4),
            "min_chain_length": MIN_ELEMENTWISE_CHAIN,
        }


def elementwise_chains(ev: TraceEvents, types: np.ndarray) -> ElementwiseChains:
    """Find unfused elementwise chains: consecutive GPU ops (by start) on one stream.

    All ops are ordered, but only kernels count as links: a memcpy or memset between two
    elementwise kernels breaks the chain (fusion cannot cross it).
    """
    kmask = ev.gpu_kind == KIND_KERNEL
    kernel_time = int(ev.gpu_dur_ns[kmask].sum())
    if not kmask.any():
        return ElementwiseChains(0, 0, 0, 0, 0, 0)
    order = np.lexsort((ev.gpu_start_ns, ev.gpu_stream, ev.gpu_device))
    is_elem = (types[order] == T_ELEM) & kmask[order]
    dev = ev.gpu_device[order]
    stream = ev.gpu_stream[order]
    dur = ev.gpu_dur_ns[order]
    # A run breaks where the type changes or the (device, stream) changes.
    new_lane = np.ones(order.size, dtype=bool)
    new_lane[1:] = (dev[1:] != dev[:-1]) | (stream[1:] != stream[:-1])
    starts = new_lane.copy()
    starts[1:] |= is_elem[1:] != is_elem[:-1]
    run_id = np.cumsum(starts) - 1
    run_len = np.bincount(run_id)
    run_elem = np.zeros(run_len.size, dtype=bool)
    run_elem[run_id[is_elem]] = True
    run_time = np.bincount(run_id, weights=dur).astype(np.int64)
    chain = run_elem & (run_len >= MIN_ELEMENTWISE_CHAIN)
    return ElementwiseChains(
        chains=int(chain.sum()),
        kernels_in_chains=int(run_len[chain].sum()),
        time_in_chains_ns=int(run_time[chain].sum()),
        longest_chain=int(run_len[chain].max()) if chain.any() else 0,
        kernel_time_ns=kernel_time,
        elementwise_kernels=int(is_elem.sum()),
    )
