"""Which of the GPUs NVML lists this process can use, read the way CUDA reads
``CUDA_VISIBLE_DEVICES``, in CUDA's order.

NVML lists every GPU on the host; a server started with ``CUDA_VISIBLE_DEVICES=0`` on an
8-GPU host would otherwise have all eight polled each tick (``nvmlDeviceGetPcieThroughput``
blocks ~20 ms per call) and other tenants' GPUs exported as its own.

The rules are PyTorch's (``torch.cuda._parse_visible_devices`` and
``_transform_uuid_to_ordinals``, with the trim of ``_device_count_nvml``), which count CUDA's
devices from NVML before CUDA starts, so the GPUs sampled here are the ones torch reports;
``tests/device/test_nvml_visible.py`` holds the two to the same answer over a grid of inputs:

- unset: every GPU;
- a value starting ``GPU-`` (or ``MIG-``) is a list of UUIDs, entries not stripped; the list
  ends at the first entry without that prefix; an entry named twice makes no GPU visible; each
  UUID is matched as a prefix of NVML's UUIDs (case as written), and the first that matches
  none or several ends the list; two entries that reach one GPU make none visible;
- any other value is a list of indices, each entry stripped and read like ``strtoul`` (``1gpu``
  is 1, ``+1`` is 1, ``-0`` is 0, ``""`` invalid); an index named twice makes no GPU visible
  (also after an index out of range), a negative or invalid one ends the list, and the list is
  cut before the first index past the last GPU. Empty: none;
- indices are in CUDA's order. NVML lists in PCI bus order; CUDA does too under
  ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, but by default (``FASTEST_FIRST``) only when the GPUs are
  alike, judged here by NVML's names being equal. Otherwise an index cannot be mapped with
  certainty and every GPU is sampled (:attr:`Selection.note` says why). UUIDs are always safe;
- MIG (torch does not map these): a ``MIG-<uuid>`` entry is a slice of a GPU whose counters
  NVML reports for the whole GPU, so it maps to its parent (``nvmlDeviceGetHandleByUUID`` then
  ``nvmlDeviceGetDeviceHandleFromMigDeviceHandle``); the older ``MIG-GPU-<uuid>/<gi>/<ci>``
  names the parent's UUID itself. Slices of one GPU are that GPU once. A MIG UUID NVML cannot
  resolve falls back to every GPU. Not modelled: CUDA enumerating only one MIG device per
  process; it can only make this sample a GPU more than CUDA uses, never one fewer.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

_INDEX = re.compile(r"[+-]?\d+")


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
    if spec is None:
        return Selection(tuple(range(count)), every_gpu=True)
    if spec.startswith(("GPU-", "MIG-")):
        return _select_uuids(spec, uuids, mig_parent)
    picked: list[int] = []
    stop: str | None = None
    for raw in spec.split(","):
        idx = _strtoul(raw.strip())
        if idx in picked:
            return Selection((), note=f"CUDA_VISIBLE_DEVICES names GPU {idx} twice")
        if idx < 0:
            stop = f"{raw!r}, not a GPU index"
            break
        picked.append(idx)
    cut = next((k for k, i in enumerate(picked) if i >= count), None)
    if cut is not None:  # torch's trim: the list ends before the first index past the last GPU
        stop = f"{picked[cut]}, past the last of {count} GPUs"
        picked = picked[:cut]
    note = None if stop is None else f"CUDA_VISIBLE_DEVICES stops at {stop}"
    if not picked:
        return Selection((), note=note or "CUDA_VISIBLE_DEVICES names no GPU")
    if (device_order or "").strip() != "PCI_BUS_ID" and len(set(names)) > 1:
        return Selection(tuple(range(count)), note="CUDA_DEVICE_ORDER is FASTEST_FIRST and "
                         f"the GPUs differ ({', '.join(sorted(set(names)))}), so CUDA's indices "
                         "cannot be mapped to NVML's; sampling every GPU", every_gpu=True)
    return Selection(tuple(picked), note=note)


def _select_uuids(spec: str, uuids: Sequence[str],
                  mig_parent: Callable[[str], int | None]) -> Selection:
    """A ``GPU-``/``MIG-`` list: entries as written, up to the first of another kind."""
    prefix = spec[:4]
    entries: list[str] = []
    stop: str | None = None
    for entry in spec.split(","):
        if entry in entries:
            return Selection((), note=f"CUDA_VISIBLE_DEVICES names {entry!r} twice")
        if not entry.startswith(prefix):
            stop = f"{entry!r}, not a {prefix} UUID"
            break
        entries.append(entry)
    picked: list[int] = []
    aliases: dict[int, list[str]] = {}
    for entry in entries:
        if prefix == "MIG-" and not entry.startswith("MIG-GPU-"):
            idx = mig_parent(entry)
            if idx is None or not 0 <= idx < len(uuids):
                return Selection(tuple(range(len(uuids))), note=f"MIG device {entry!r} could "
                                 "not be mapped to its GPU through NVML; sampling every GPU",
                                 every_gpu=True)
        else:  # GPU-<uuid>, or MIG-GPU-<parent uuid>/<gi>/<ci>
            idx = _by_prefix(entry[4:].split("/", 1)[0] if prefix == "MIG-" else entry, uuids)
            if idx < 0:
                stop = f"{entry!r}, which matches no single GPU"
                break
        if prefix == "MIG-":  # slices of one GPU are that GPU once
            aliases.setdefault(idx, []).append(entry)
            if idx in picked:
                continue
        elif idx in picked:
            return Selection((), note=f"CUDA_VISIBLE_DEVICES names GPU {uuids[idx]} twice")
        picked.append(idx)
    note = None if stop is None else f"CUDA_VISIBLE_DEVICES stops at {stop}"
    if not picked:
        return Selection((), note=note or "CUDA_VISIBLE_DEVICES names no GPU")
    return Selection(tuple(picked), {k: tuple(v) for k, v in aliases.items()}, note)


def _strtoul(text: str) -> int:
    """torch's reading of an index entry: its leading [+-]digits, -1 when there are none."""
    m = _INDEX.match(text)
    return int(m.group(0)) if m else -1


def _by_prefix(prefix: str, uuids: Sequence[str]) -> int:
    """NVML index of the one GPU whose UUID starts with ``prefix`` (``GPU-`` included, case
    as written); -1 for none or several."""
    hits = [i for i, u in enumerate(uuids) if u.startswith(prefix)]
    return hits[0] if len(hits) == 1 else -1
