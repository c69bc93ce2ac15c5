"""Which of the GPUs NVML lists this process can use, read the way CUDA reads
``CUDA_VISIBLE_DEVICES``, in CUDA's order.

NVML lists every GPU on the host; a server started with ``CUDA_VISIBLE_DEVICES=0`` on an
8-GPU host would otherwise have all eight polled each tick (``nvmlDeviceGetPcieThroughput``
blocks ~20 ms per call) and other tenants' GPUs exported as its own.

The rules, from NVIDIA's CUDA environment-variable documentation (the CUDA C Programming
Guide's "CUDA_VISIBLE_DEVICES" entry) and, where it is silent, from two implementations that
copy the driver's behaviour: PyTorch's
``torch.cuda._parse_visible_devices``/``_transform_uuid_to_ordinals`` and nvitop's
``_parse_cuda_visible_devices`` (which checks itself against ``cuDeviceGetCount`` in a child
process):

- unset: every GPU; set but empty: none;
- a comma-separated list, each entry stripped; an entry is an index (read like ``strtoul``:
  its leading digits, so ``1gpu`` is 1), ``GPU-<uuid>`` or any unique prefix of one,
  ``MIG-<uuid>`` or the older ``MIG-GPU-<uuid>/<gi>/<ci>``;
- the first invalid entry (an index out of range or negative such as ``-1``, a UUID that
  matches no GPU or more than one, an entry of another kind than the first: an index after
  UUIDs or the reverse) ends the list: only the entries before it are visible;
- a GPU named twice (``0,0``, or two prefixes of one UUID) before that point makes no GPU
  visible. NVIDIA's documentation does not say; both implementations above return the empty
  set, and nvitop's is checked against the driver, so that is what is relied on here;
- indices are in CUDA's order. NVML lists in PCI bus order; CUDA does too under
  ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, but by default (``FASTEST_FIRST``) only when the GPUs are
  alike, judged here by NVML's names being equal. Otherwise an index cannot be mapped with
  certainty and every GPU is sampled (:attr:`Selection.note` says why). UUIDs are always safe;
- a MIG entry is a slice of a GPU whose counters NVML reports for the whole GPU: it maps to
  its parent (``nvmlDeviceGetHandleByUUID`` then
  ``nvmlDeviceGetDeviceHandleFromMigDeviceHandle``; the older form names the parent's UUID
  itself). Slices of one GPU are that GPU once. A MIG UUID NVML cannot resolve (an
  abbreviated one, or a driver without the MIG calls) falls back to every GPU. Not modelled:
  CUDA enumerating only one MIG device per process (nvitop assumes it does), and a MIG-mode
  GPU named by index or GPU UUID hiding the other GPUs listed: both make this sample a GPU
  more than CUDA uses, never one fewer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

_INDEX = re.compile(r"\+?(\d+)")


@dataclass(frozen=True)
class Selection:
    """The GPUs to sample: NVML indices in CUDA's order (a position is the CUDA device index
    where the mapping is certain), the MIG UUIDs that map onto each, and a note for the one
    log line when the result is not simply what was asked (a fallback, or nothing visible)."""

    nvml_indices: tuple[int, ...]
    aliases: dict[int, tuple[str, ...]] = field(default_factory=dict)
    note: str | None = None
    every_gpu: bool = False  # the fallback (or the variable unset): all NVML lists


def select(
    spec: str | None,
    names: Sequence[str],
    uuids: Sequence[str],
    *,
    device_order: str | None = None,
    mig_parent: Callable[[str], int | None] = lambda uuid: None,
) -> Selection:
    """The visible GPUs among ``names``/``uuids`` (NVML's list, in NVML's order) for the
    ``CUDA_VISIBLE_DEVICES`` value ``spec`` (None: unset). ``mig_parent`` maps a ``MIG-`` UUID
    to its parent's NVML index (None when NVML cannot tell)."""
    count = len(uuids)
    every = tuple(range(count))
    if spec is None:
        return Selection(every, every_gpu=True)
    if not spec.strip():
        return Selection((), note="CUDA_VISIBLE_DEVICES is empty")
    picked: list[int] = []
    named: set[tuple[str, object]] = set()  # ("gpu", nvml index) or ("mig", its UUID)
    aliases: dict[int, list[str]] = {}
    kind: str | None = None
    stop: str | None = None
    for raw in spec.split(","):
        entry = raw.strip()
        this = "uuid" if entry.startswith(("GPU-", "MIG-")) else "index"
        if kind is None:
            kind = this
        elif this != kind:
            stop = f"{entry!r}, which mixes indices and UUIDs"
            break
        mig: str | None = None  # the MIG device's identity, when the entry names one
        if this == "index":
            m = _INDEX.match(entry)
            idx = int(m.group(1)) if m else -1
            if not 0 <= idx < count:
                stop = f"{entry!r}, not a GPU index below {count}"
                break
        elif entry.startswith("MIG-GPU-"):  # MIG-GPU-<parent uuid>/<gi>/<ci>
            idx = _by_prefix(entry[4:].split("/", 1)[0], uuids)
            if idx < 0:
                stop = f"{entry!r}, which names no single GPU"
                break
            mig = entry.lower()
        elif entry.startswith("MIG-"):
            found = mig_parent(entry)
            if found is None or not 0 <= found < count:
                return Selection(every, note=f"MIG device {entry!r} could not be mapped to its "
                                 "GPU through NVML; sampling every GPU", every_gpu=True)
            idx, mig = found, entry.lower()
            aliases.setdefault(idx, []).append(entry)
        else:
            idx = _by_prefix(entry, uuids)
            if idx < 0:
                stop = f"{entry!r}, which matches no single GPU UUID"
                break
        key = ("gpu", idx) if mig is None else ("mig", mig)
        if key in named:
            return Selection((), note=f"CUDA_VISIBLE_DEVICES names {entry!r} twice")
        named.add(key)
        if idx not in picked:
            picked.append(idx)
    note = None if stop is None else f"CUDA_VISIBLE_DEVICES stops at {stop}"
    if not picked:
        return Selection((), note=note)
    if kind == "index" and (device_order or "").strip() != "PCI_BUS_ID" and len(set(names)) > 1:
        return Selection(every, note="CUDA_DEVICE_ORDER is FASTEST_FIRST and the GPUs differ "
                         f"({', '.join(sorted(set(names)))}), so CUDA's indices cannot be "
                         "mapped to NVML's; sampling every GPU", every_gpu=True)
    return Selection(tuple(picked), {k: tuple(v) for k, v in aliases.items()}, note)


def _by_prefix(prefix: str, uuids: Sequence[str]) -> int:
    """NVML index of the one GPU whose UUID starts with ``prefix`` (``GPU-`` included);
    -1 for none or several."""
    want = prefix.lower()
    hits = [i for i, u in enumerate(uuids) if u.lower().startswith(want)]
    return hits[0] if len(hits) == 1 else -1
