"""Prompt fingerprints: exact keyed BLAKE2b and near-duplicate SimHash."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

import inferaudit_sdk as ia
from inferaudit_sdk import _fingerprint as fp
from inferaudit_sdk import _settings, semconv

KEY_A = b"a" * 32
KEY_B = b"b" * 32


def _prompt(seed: int, n: int = 200) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 50_000, n)


def test_exact_is_keyed_blake2b_of_int64_le_bytes():
    ids = np.array([1, 2, 70000])
    exact, _ = fp.fingerprint_ids(ids, KEY_A)
    expected = hashlib.blake2b(np.array([1, 2, 70000], dtype="<i8").tobytes(), digest_size=16,
                               key=KEY_A).hexdigest()
    assert exact == expected and len(exact) == 32
    assert fp.fingerprint_ids(np.array([1, 2, 70000], dtype=np.int32), KEY_A)[0] == exact


def test_same_prompt_same_fingerprint_different_key_different():
    ids = _prompt(1)
    assert fp.fingerprint_ids(ids, KEY_A) == fp.fingerprint_ids(ids.copy(), KEY_A)
    a, b = fp.fingerprint_ids(ids, KEY_A), fp.fingerprint_ids(ids, KEY_B)
    assert a[0] != b[0]
    assert a[1] != b[1]
    assert fp.fingerprint_text("hello there", KEY_A) != fp.fingerprint_text("hello there", KEY_B)


def test_near_duplicates_are_close_unrelated_are_far():
    base = _prompt(7)
    near = base.copy()
    near[120] = (near[120] + 1) % 50_000
    sim = fp.fingerprint_ids(base, KEY_A)[1]
    assert len(sim) == 16
    d_near = fp.hamming(sim, fp.fingerprint_ids(near, KEY_A)[1])
    assert d_near <= 6
    far = [fp.hamming(sim, fp.fingerprint_ids(_prompt(100 + i), KEY_A)[1]) for i in range(20)]
    assert 24 <= sum(far) / len(far) <= 40  # ~32 for independent 64-bit hashes
    assert min(far) > d_near


def test_text_simhash_uses_word_shingles():
    words = [f"w{i}" for i in range(200)]
    a = " ".join(words)
    words[77] = "changed"
    b = " ".join(words)
    sa, sb = fp.fingerprint_text(a, KEY_A)[1], fp.fingerprint_text(b, KEY_A)[1]
    assert fp.hamming(sa, sb) <= 6
    assert fp.fingerprint_text(a, KEY_A)[0] != fp.fingerprint_text(b, KEY_A)[0]


def test_short_and_empty_prompts():
    assert fp.fingerprint_ids(np.array([5]), KEY_A)[1] != fp.fingerprint_ids(np.array([6]),
                                                                             KEY_A)[1]
    assert fp.fingerprint_ids(np.array([], dtype=np.int64), KEY_A)[1] == "0" * 16


def test_span_attributes_key_id_and_basis(otel, audit_config):
    exporter, _ = otel
    audit_config(fingerprint_key="shared-secret-for-replicas")

    @ia.audited
    def by_ids(input_ids):
        return None

    @ia.audited
    def by_text(prompt):
        return None

    by_ids([1, 2, 3, 4])
    by_ids([1, 2, 3, 4])
    by_text("what is the capital of France?")
    s1, s2, s3 = exporter.get_finished_spans()
    key_id = hashlib.blake2b(b"shared-secret-for-replicas", digest_size=32).hexdigest()[:8]
    for s in (s1, s2, s3):
        assert s.attributes[semconv.PROMPT_FINGERPRINT_KEY_ID] == key_id
    assert s1.attributes[semconv.PROMPT_FINGERPRINT] == s2.attributes[semconv.PROMPT_FINGERPRINT]
    assert s1.attributes[semconv.PROMPT_FINGERPRINT_BASIS] == "token_ids"
    assert s3.attributes[semconv.PROMPT_FINGERPRINT_BASIS] == "text"
    expected = fp.fingerprint_ids(np.array([1, 2, 3, 4]), b"shared-secret-for-replicas")
    assert s1.attributes[semconv.PROMPT_FINGERPRINT] == expected[0]
    assert s1.attributes[semconv.PROMPT_SIMHASH] == expected[1]


def test_unset_key_is_random_per_process(audit_config):
    audit_config()
    d = _settings.derived()
    assert d.fingerprint_key == _settings._PROCESS_KEY and len(d.fingerprint_key) == 32
    assert d.fingerprint_key_id == hashlib.blake2b(d.fingerprint_key,
                                                   digest_size=32).hexdigest()[:8]
    audit_config(fingerprint_key="k")
    assert _settings.derived().fingerprint_key == b"k"


def test_long_keys_are_hashed_to_blake2b_size(audit_config):
    audit_config(fingerprint_key="x" * 200)
    assert len(_settings.derived().fingerprint_key) == 64


def test_padding_excluded_from_fingerprint(otel):
    torch = pytest.importorskip("torch")
    exporter, _ = otel

    @ia.audited
    def gen(input_ids, attention_mask):
        return None

    gen(torch.tensor([[0, 0, 5, 6, 7]]), torch.tensor([[0, 0, 1, 1, 1]]))
    gen(torch.tensor([[5, 6, 7]]), torch.tensor([[1, 1, 1]]))
    a, b = exporter.get_finished_spans()
    assert a.attributes[semconv.PROMPT_FINGERPRINT] == b.attributes[semconv.PROMPT_FINGERPRINT]


def _naive_simhash(hashes: np.ndarray) -> int:
    values = [int(h) for h in hashes]
    n = len(values)
    return sum(1 << j for j in range(64) if 2 * sum((v >> j) & 1 for v in values) > n)


@pytest.mark.parametrize("n", [1, 2, 3, 254, 255, 256, 257, 1000])
def test_simhash_bit_counting_matches_a_plain_count_on_both_paths(n):
    rng = np.random.default_rng(n)
    random = rng.integers(0, 2**63, n, dtype=np.int64).view(np.uint64) * np.uint64(3)
    all_ones = np.full(n, 2**64 - 1, dtype=np.uint64)  # every byte-wide counter at its maximum
    one_bit = np.full(n, 1 << 63, dtype=np.uint64)
    for hashes in (random, all_ones, one_bit):
        assert fp.simhash_of_hashes(hashes) == _naive_simhash(hashes)


def test_word_hashes_are_the_same_on_both_paths_and_split_on_ascii_whitespace():
    """Short texts take a Python loop, long ones numpy passes: the hashes must not depend on
    which, or prompts either side of the threshold could never be near duplicates."""
    import random

    rnd = random.Random(1)
    pieces = ["a", "b", "é", "日本", "\t", "\n", " ", "  ", "\x0b", "\x1c", "\xa0", "x" * 50]
    for _ in range(500):
        data = "".join(rnd.choice(pieces) for _ in range(rnd.randrange(0, 80))).encode()
        assert np.array_equal(fp._word_hashes_py(data), fp._word_hashes_np(data)), data
    spaced = fp.word_hashes(b"a  b\tc\nd\r\x0be\x0cf")
    assert np.array_equal(spaced, fp.word_hashes(b"a b c d e f"))
    assert len(fp.word_hashes("a\xa0b".encode())) == 1  # a no-break space is not ASCII
    long = (" ".join(f"w{i % 300}" for i in range(2000))).encode()
    assert len(long) >= fp._NUMPY_FROM_BYTES
    assert np.array_equal(fp.word_hashes(long), fp._word_hashes_py(long))
    assert fp.word_hashes(b" \t ").shape == (0,)
