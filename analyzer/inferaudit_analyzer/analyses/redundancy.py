"""Redundant compute: requests that recompute an answer a cache could have returned.

Exact duplicates: requests whose keyed prompt fingerprint already occurred (compared only within
the same ``fp_key_id``: fingerprints under different keys are unrelated). A fingerprint without a
key id (a user-supplied one, which the SDK keeps as given, or a foreign span's) belongs to the
empty key: NULL must not reach the comparison, where ``NULL || fp`` is NULL and every such request
would read as a repeat. Exact repeats are counted off the same grouping that yields the distinct
prompts, so the count and the device time it saved cannot disagree. Near duplicates: distinct
fingerprints whose 64-bit SimHashes differ in at most ``k`` bits (default 3). Candidates come from
LSH banding: the hash is cut into 4 bands of 16 bits; two hashes within 3 bits of each other agree
exactly on at least one band (pigeonhole), so only hashes sharing a band value are compared, and
those exactly (popcount of XOR). Near-duplicate prompts are joined into clusters (union-find); a
cluster of d distinct prompts has d - 1 redundant ones. Cache hits are left out: they did not
compute. Cacheable share = (exact + near redundant requests) / requests computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from inferaudit_analyzer import thresholds as th
from inferaudit_analyzer.analyses._common import ratio, rounded
from inferaudit_analyzer.findings import Finding

# The fingerprint key of a request: a missing key id is the empty key (see the module docstring).
KEY_ID_EXPR = "COALESCE(fp_key_id, '')"

COUNTS_SQL = """
SELECT COUNT(*) AS computed, COUNT(prompt_fp) AS fingerprinted
FROM requests WHERE cache_hit IS NOT TRUE
"""

# One row per distinct prompt (key id, fingerprint) with its SimHash and request count / device
# time; the device time of the repeats (all but the first) is what a cache would have saved.
# The fingerprint itself stays in the engine (only grouped on): on ClickHouse this is the one
# result that grows with the data, and the fingerprint was most of its bytes.
DISTINCT_PROMPTS_SQL = f"""
SELECT {KEY_ID_EXPR} AS key_id, MIN(prompt_simhash) AS simhash,
       COUNT(*) AS n, SUM(COALESCE(device_ns, 0)) AS device_ns,
       MAX(COALESCE(device_ns, 0)) AS device_ns_one
FROM requests
WHERE cache_hit IS NOT TRUE AND prompt_fp IS NOT NULL
GROUP BY key_id, prompt_fp
"""

CACHE_HITS_SQL = "SELECT COUNT(*) FILTER (WHERE cache_hit), COUNT(*) FROM requests"

_BAND_BITS = 16
_BAND_MASK = np.uint64((1 << _BAND_BITS) - 1)


@dataclass(frozen=True)
class Redundancy:
    computed: int
    fingerprinted: int
    exact_redundant: int
    near_redundant: int
    redundant_device_ns: int
    cache_hits: int
    requests: int
    hamming_k: int

    @property
    def cacheable_ratio(self) -> float | None:
        return ratio(self.exact_redundant + self.near_redundant, self.computed)

    def to_json(self) -> dict[str, Any]:
        return {
            "requests_computed": self.computed,
            "fingerprinted": self.fingerprinted,
            "exact_duplicate_ratio": rounded(ratio(self.exact_redundant, self.computed), 4),
            "near_duplicate_ratio": rounded(ratio(self.near_redundant, self.computed), 4),
            "cacheable_ratio": rounded(self.cacheable_ratio, 4),
            "redundant_device_s": self.redundant_device_ns / 1e9,
            "cache_hit_ratio": rounded(ratio(self.cache_hits, self.requests), 4),
            "near_dup_hamming_bits": self.hamming_k,
        }


def _popcount64(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[x.view(np.uint8).reshape(-1, 8)].sum(axis=1)


def _parse_simhash(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(indices of parseable rows, uint64 hashes); unparseable SimHashes are skipped."""
    idx, hashes = [], []
    for i, v in enumerate(values):
        if v is None:
            continue
        try:
            h = int(str(v), 16)
        except ValueError:
            continue
        if 0 <= h < (1 << 64):
            idx.append(i)
            hashes.append(h)
    return np.asarray(idx, dtype=np.int64), np.asarray(hashes, dtype=np.uint64)


def near_duplicate_pairs(hashes: np.ndarray, k: int,
                         bands: int = th.SIMHASH_BANDS) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, of hashes within Hamming distance ``k`` (recall needs k < bands).

    Vectorised banding: per band, sort by the band value; rows ``d`` apart in that order with
    equal band values are candidates, for d = 1, 2, ... until no run is that long. Cost is
    O(n x longest run) per band; identical hashes should be collapsed by the caller first.
    """
    n = len(hashes)
    if n < 2:
        return []
    found: list[np.ndarray] = []
    for b in range(bands):
        band = (hashes >> np.uint64(b * _BAND_BITS)) & _BAND_MASK
        order = np.argsort(band, kind="stable")
        sb = band[order]
        for d in range(1, n):
            same = np.flatnonzero(sb[:-d] == sb[d:])
            if same.size == 0:
                break
            i, j = order[same], order[same + d]
            close = _popcount64(hashes[i] ^ hashes[j]) <= k
            if close.any():
                found.append(np.stack([np.minimum(i, j)[close], np.maximum(i, j)[close]], 1))
    if not found:
        return []
    pairs = np.unique(np.concatenate(found), axis=0)
    return [(int(a), int(c)) for a, c in pairs]


def _clusters(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected components by min-label propagation with pointer jumping (vectorised)."""
    labels = np.arange(n)
    if len(pairs) == 0:
        return labels
    i, j = pairs[:, 0], pairs[:, 1]
    while True:
        m = np.minimum(labels[i], labels[j])
        new = labels.copy()
        np.minimum.at(new, i, m)
        np.minimum.at(new, j, m)
        new = new[new]
        if np.array_equal(new, labels):
            return labels
        labels = new


def _near_redundant(key_ids: np.ndarray, simhashes: np.ndarray, cost_one: np.ndarray,
                    k: int) -> tuple[int, int]:
    """(near-duplicate prompts, their device ns) over distinct prompts, per fingerprint key."""
    near, redundant_ns = 0, 0
    for key in np.unique(key_ids):
        members = np.flatnonzero(key_ids == key)
        idx, hashes = _parse_simhash(simhashes[members])
        if len(hashes) < 2:
            continue
        rows = members[idx]
        # identical SimHashes are one node; their prompts all join that node's cluster
        uniq, inverse = np.unique(hashes, return_inverse=True)
        pairs = np.asarray(near_duplicate_pairs(uniq, k), dtype=np.int64).reshape(-1, 2)
        roots = _clusters(len(uniq), pairs)[inverse]
        _, cluster, sizes = np.unique(roots, return_inverse=True, return_counts=True)
        costs = cost_one[rows].astype(np.float64)
        total = np.bincount(cluster, weights=costs)
        most = np.full(len(sizes), -np.inf)
        np.maximum.at(most, cluster, costs)
        multi = sizes > 1
        near += int((sizes[multi] - 1).sum())
        # keep the most expensive distinct prompt of each cluster; the others were redundant
        redundant_ns += int((total[multi] - most[multi]).sum())
    return near, redundant_ns


def analyze_redundancy(con: Any, hamming_k: int = th.NEAR_DUP_HAMMING_BITS) -> Redundancy:
    computed, fingerprinted = con.execute(COUNTS_SQL).fetchone()
    hits, total = con.execute(CACHE_HITS_SQL).fetchone()
    cols = con.execute(DISTINCT_PROMPTS_SQL).fetchnumpy()
    n = np.asarray(cols["n"], dtype=np.int64)
    exact = int((n - 1).sum())  # every request of a distinct prompt after its first
    dev = np.asarray(cols["device_ns"], dtype=np.float64)
    one = np.asarray(cols["device_ns_one"], dtype=np.float64)
    # device time of exact repeats: all but the most expensive occurrence of each prompt
    redundant_ns = int((dev - one)[n > 1].sum())
    near, near_ns = _near_redundant(np.asarray(cols["key_id"], dtype=object),
                                    np.asarray(cols["simhash"], dtype=object), one, hamming_k)
    return Redundancy(
        computed=int(computed), fingerprinted=int(fingerprinted), exact_redundant=int(exact),
        near_redundant=int(near), redundant_device_ns=redundant_ns + near_ns,
        cache_hits=int(hits or 0), requests=int(total), hamming_k=hamming_k,
    )


def redundancy_findings(red: Redundancy) -> list[Finding]:
    share = red.cacheable_ratio
    if share is None or share < th.CACHEABLE_SHARE_RATIO:
        return []
    return [Finding(
        id="redundant_compute",
        title="Requests recompute answers to prompts already seen",
        severity="high" if share >= th.CACHEABLE_SHARE_HIGH_RATIO else "medium",
        layer="runtime",
        evidence={
            "cacheable_ratio": round(share, 4),
            "exact_duplicate_requests": red.exact_redundant,
            "near_duplicate_requests": red.near_redundant,
            "requests_computed": red.computed,
            "redundant_device_s": red.redundant_device_ns / 1e9,
            "near_dup_hamming_bits": red.hamming_k,
            "threshold_ratio": th.CACHEABLE_SHARE_RATIO,
        },
        detail=("Exact repeats (same keyed fingerprint) can be served from a response cache; "
                "near repeats (SimHash within k bits) from a semantic or prefix cache. Cache hits "
                "already served are excluded."),
    )]
