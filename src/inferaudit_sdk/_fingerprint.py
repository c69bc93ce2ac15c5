"""Prompt fingerprints: an exact keyed hash and a near-duplicate SimHash, never the prompt.

*Exact*: keyed BLAKE2b, 16-byte digest, hex; over the prompt token ids as little-endian int64
bytes, or over the UTF-8 text when only text is known (``fingerprint_basis`` says which, since
the two never compare equal). *Near-duplicate*: a 64-bit SimHash over 3-gram shingles of token
ids (word 3-grams for text, each word a polynomial hash of its bytes); prompts that differ in a
few tokens differ in a few bits, unrelated prompts in about 32. Both are numpy passes over the
ids or bytes, so a long prompt costs milliseconds, not a Python step per word. Both are keyed
with ``AuditConfig.fingerprint_key`` (random per process if unset; for the SimHash, through the
seed its shingles are mixed with) so fingerprints of short prompts cannot be looked up in a
dictionary by whoever reads the traces; ``fingerprint_key_id`` lets the analyzer compare only
fingerprints made with the same key.
"""

from __future__ import annotations

import hashlib
import sys
from typing import Any

import numpy as np

from inferaudit_sdk import _settings, semconv

SHINGLE = 3
BASIS_TOKEN_IDS = "token_ids"
BASIS_TEXT = "text"
_LE_INT64 = np.dtype("<i8")

# Odd 64-bit multipliers for mixing the positions of a shingle (from splitmix64/xxhash).
_K = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9)
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_MASK64 = (1 << 64) - 1
_K1, _K2, _K3 = (np.uint64(k) for k in _K)
_NM1, _NM2 = np.uint64(_M1), np.uint64(_M2)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)
_LITTLE = sys.byteorder == "little"
# Bit counting (see _bit_counts): byte-wide counters hold up to 255; bit b of byte value v;
# offsets that give each of the 8 byte columns its own 256 histogram bins.
_LANE_MAX = 255
_BYTE_BITS = ((np.arange(256)[:, None] >> np.arange(8)) & 1).astype(np.float64)
_COLUMN_OFFSETS = np.arange(8, dtype=np.intp) * 256
_seeds: dict[bytes, int] = {}
_np_seeds: dict[int, np.uint64] = {}


def _seed(key: bytes) -> int:
    seed = _seeds.get(key)
    if seed is None:
        digest = hashlib.blake2b(key, digest_size=8, person=b"simhash").digest()
        seed = _seeds[key] = int.from_bytes(digest, "little")
        _np_seeds[seed] = np.uint64(seed)
    return seed


def _mix_int(x: int) -> int:
    """splitmix64 finaliser on a Python int."""
    x = ((x ^ (x >> 30)) * _M1) & _MASK64
    x = ((x ^ (x >> 27)) * _M2) & _MASK64
    return x ^ (x >> 31)


def _shingle_hashes(u: np.ndarray, seed: int) -> np.ndarray:
    """One 64-bit hash per 3-gram of ``u`` (uint64), mixed with the key's seed, in place
    where possible (uint64 arithmetic wraps, as intended; arrays never warn on overflow)."""
    n = u.shape[0]
    if n == 0:
        return u
    if n < SHINGLE:
        h = seed
        for i in range(n):
            h ^= (int(u[i]) * _K[i]) & _MASK64
        return np.asarray([_mix_int(h)], dtype=np.uint64)
    h = u[:-2] * _K1
    h ^= u[1:-1] * _K2
    h ^= u[2:] * _K3
    h ^= _np_seeds.get(seed) or np.uint64(seed)
    h ^= h >> _S30
    h *= _NM1
    h ^= h >> _S27
    h *= _NM2
    h ^= h >> _S31
    return h


def _bit_counts(le: np.ndarray) -> np.ndarray:
    """How many of the little-endian uint64 ``le`` have each of the 64 bits set (bit j at j).

    Numpy call overhead dominates for prompts of a few hundred tokens, so the counting is
    chosen by size. Up to 255 hashes: unpack to one byte per bit and add the rows as uint64
    words, eight byte-wide counters per word (no count passes 255, so none carries into the
    next; no widening cast either). Beyond: one ``bincount`` over (byte column, byte value),
    8 entries per hash instead of 64, then a 256x8 bit table turns the histogram into counts.
    """
    n = le.shape[0]
    b = le.view(np.uint8).reshape(n, 8)
    if n <= _LANE_MAX:
        bits = np.unpackbits(b, axis=1, bitorder="little")
        return bits.view(np.uint64).sum(axis=0).view(np.uint8)
    hist = np.bincount((b + _COLUMN_OFFSETS).reshape(-1), minlength=8 * 256)
    return (hist.reshape(8, 256) @ _BYTE_BITS).reshape(-1)


def simhash_of_hashes(hashes: np.ndarray) -> int:
    """64-bit SimHash: bit j is set when more than half the shingle hashes have bit j set."""
    n = hashes.shape[0]
    if n == 0:
        return 0
    le = hashes if _LITTLE else hashes.astype("<u8")
    packed = np.packbits(_bit_counts(le) > n // 2, bitorder="little")  # i.e. 2 * count > n
    return int.from_bytes(packed.tobytes(), "little")


def fingerprint_ids(ids: np.ndarray, key: bytes | None = None) -> tuple[str, str]:
    """(exact hex32, simhash hex16) of an array of token ids (flattened in row order)."""
    k = key if key is not None else _settings.derived().fingerprint_key
    flat = ids.reshape(-1)
    if flat.dtype != _LE_INT64 or not flat.flags.c_contiguous:
        flat = np.ascontiguousarray(flat, dtype=_LE_INT64)
    exact = hashlib.blake2b(flat, digest_size=16, key=k).hexdigest()
    sim = simhash_of_hashes(_shingle_hashes(flat.view(np.uint64), _seed(k)))
    return exact, f"{sim:016x}"


def fingerprint_text(text: str, key: bytes | None = None) -> tuple[str, str]:
    """(exact hex32, simhash hex16) of a prompt known only as text (word 3-gram shingles)."""
    k = key if key is not None else _settings.derived().fingerprint_key
    data = text.encode("utf-8")
    exact = hashlib.blake2b(data, digest_size=16, key=k).hexdigest()
    sim = simhash_of_hashes(_shingle_hashes(word_hashes(data), _seed(k)))
    return exact, f"{sim:016x}"


# Bytes that separate words: ASCII whitespace, as bytes.split() knows it (other spaces stay
# inside words). A word's hash is sum((byte_i + 1) * P^i) mod 2^64 over its bytes.
_SPACE = np.zeros(256, dtype=bool)
_SPACE[list(b" \t\n\r\x0b\x0c")] = True
_P_INT = 0x100000001B3  # FNV's 64-bit prime: odd, so every power is odd too
_P = np.uint64(_P_INT)
_powers = np.ones(1, dtype=np.uint64)
# Below this many bytes a Python loop is cheaper than numpy's per-call overhead (measured:
# 8 words, 69 us in numpy; the same hashes either way, so the choice never shows).
_NUMPY_FROM_BYTES = 1024


def word_hashes(data: bytes) -> np.ndarray:
    """One uint64 per word of UTF-8 ``data``, in order. Only the shingles are keyed
    (:func:`_shingle_hashes`), as for token ids."""
    if len(data) < _NUMPY_FROM_BYTES:
        return _word_hashes_py(data)
    return _word_hashes_np(data)


def _word_hashes_py(data: bytes) -> np.ndarray:
    seen: dict[bytes, int] = {}
    out = []
    for word in data.split():
        h = seen.get(word)
        if h is None:
            h = 0
            for c in reversed(word):  # Horner: (b_0 + 1) + P * ((b_1 + 1) + P * (...))
                h = (h * _P_INT + c + 1) & _MASK64
            seen[word] = h
        out.append(h)
    return np.array(out, dtype=np.uint64)


def _word_hashes_np(data: bytes) -> np.ndarray:
    """:func:`word_hashes` as numpy passes over the bytes: a long prompt costs milliseconds,
    not a Python step per byte."""
    global _powers
    b = np.frombuffer(data, dtype=np.uint8)
    inside = ~_SPACE[b]
    if not inside.any():
        return np.zeros(0, dtype=np.uint64)
    starts = inside.copy()
    starts[1:] &= ~inside[:-1]  # a byte inside a word that follows a separator (or begins)
    word = np.cumsum(starts)[inside] - 1  # each word byte's word number
    first = np.flatnonzero(starts)
    offset = np.flatnonzero(inside) - first[word]  # each byte's place in its word
    longest = int(offset.max()) + 1
    if _powers.shape[0] < longest:  # _P ** i for i < longest (uint64 products wrap)
        grown = np.full(max(longest, 2 * _powers.shape[0]), _P, dtype=np.uint64)
        grown[0] = 1
        _powers = np.cumprod(grown, dtype=np.uint64)
    terms = (b[inside].astype(np.uint64) + np.uint64(1)) * _powers[offset]
    return np.add.reduceat(terms, np.flatnonzero(starts[inside]))


def hamming(a_hex: str, b_hex: str) -> int:
    """Bits that differ between two SimHash hex strings."""
    return (int(a_hex, 16) ^ int(b_hex, 16)).bit_count()


def attributes_for_ids(ids: np.ndarray) -> dict[str, Any]:
    """The span attributes for a prompt given as token ids."""
    d = _settings.derived()
    exact, sim = fingerprint_ids(ids, d.fingerprint_key)
    return {
        semconv.PROMPT_FINGERPRINT: exact,
        semconv.PROMPT_SIMHASH: sim,
        semconv.PROMPT_FINGERPRINT_KEY_ID: d.fingerprint_key_id,
        semconv.PROMPT_FINGERPRINT_BASIS: BASIS_TOKEN_IDS,
    }


def attributes_for_text(text: str) -> dict[str, Any]:
    """The span attributes for a prompt known only as text."""
    d = _settings.derived()
    exact, sim = fingerprint_text(text, d.fingerprint_key)
    return {
        semconv.PROMPT_FINGERPRINT: exact,
        semconv.PROMPT_SIMHASH: sim,
        semconv.PROMPT_FINGERPRINT_KEY_ID: d.fingerprint_key_id,
        semconv.PROMPT_FINGERPRINT_BASIS: BASIS_TEXT,
    }
