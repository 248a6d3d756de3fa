"""Attention maths: streaming == whole-array reference, thresholds, cleaning."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from curator.pseudolabel.core import (
    AttentionParams,
    AttentionStream,
    attention_bit,
    attention_reference,
    attention_words,
    clean_reference,
    ensemble_stats,
    entr,
)


def _probs(seed: int, shape: tuple[int, int, int], terms: list[str], n: int = 3) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = {}
    for t in terms:
        base = ndimage.gaussian_filter(rng.random(shape), 2.0)
        base = (base - base.min()) / (np.ptp(base) + 1e-9)
        out[t] = [np.clip(base + ndimage.gaussian_filter(rng.normal(0, 0.4, shape), 1.5), 0, 1).astype(np.float32)
                  for _ in range(n)]
    return out


def test_stats_match_numpy() -> None:
    p = _probs(0, (6, 7, 8), ["a"])["a"]
    s = ensemble_stats(p)
    stack = np.stack(p)
    np.testing.assert_allclose(s.mean, stack.mean(0), atol=1e-6)
    np.testing.assert_allclose(s.std, stack.std(0), atol=1e-6)
    np.testing.assert_allclose(s.entropy, np.mean([-x * np.log(np.where(x > 0, x, 1)) for x in p], 0), atol=1e-6)
    assert entr(np.array([0.0, 1.0]))[0] == 0 and abs(entr(np.array([1.0]))[0]) < 1e-7


def test_identical_members_have_no_spread() -> None:
    """E[p²] − E[p]² in float32 gave three identical members a std up to 3.5e-4 (not 0)."""
    p = _probs(1, (16, 16, 16), ["a"])["a"][0]
    s = ensemble_stats([p, p, p])
    assert float(s.std.max()) == 0.0
    np.testing.assert_allclose(s.mean, p, atol=1e-7)


def test_cleaning_removes_thin_shells_keeps_blobs() -> None:
    m = np.zeros((30, 30, 30), bool)
    m[5:15, 5:15, 5:15] = True  # a 10-voxel blob survives erosion(2) + dilation(2)
    m[20, :, :] = True  # a one-voxel sheet does not
    c = clean_reference(m, 2)
    assert c[5:15, 5:15, 5:15].all() and not c[20].any()


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), cuts=st.lists(st.integers(1, 36), min_size=0, max_size=6, unique=True),
       iterations=st.integers(0, 2))
def test_stream_equals_reference(seed: int, cuts: list[int], iterations: int) -> None:
    shape = (14, 12, 37)
    terms = ["a", "b", "c"]
    stats = {t: ensemble_stats(v) for t, v in _probs(seed, shape, terms).items()}
    params = AttentionParams(iterations=iterations)
    codes, masks, ref = attention_reference(stats, ["a", "c"], params, voxel_ml=0.5)
    stream = AttentionStream(shape, terms, ["a", "c"], params, voxel_ml=0.5)
    edges = [0, *sorted(cuts), 37]
    for z0, z1 in itertools.pairwise(edges):
        stream.push(z0, z1, {t: s.rows(z0, z1) for t, s in stats.items()})
    got = stream.finish()
    assert np.array_equal(stream.label, codes)
    for k, t in enumerate(["a", "c"]):
        assert np.array_equal(attention_bit(stream.words, k), masks[t])
        assert got[t].attention_voxels == ref[t].attention_voxels
        assert got[t].attention_size == pytest.approx(ref[t].attention_size, rel=2e-3, abs=1e-3)
        assert got[t].peak_slice == ref[t].peak_slice


def test_identical_members_have_no_inconsistency_and_confident_ones_no_uncertainty() -> None:
    p = np.zeros((20, 20, 20), np.float32)
    p[5:15, 5:15, 5:15] = 1.0
    stats = {"a": ensemble_stats([p, p, p])}
    _, masks, summ = attention_reference(stats, ["a"], AttentionParams())
    assert summ["a"].attention_size == 0 and not masks["a"].any()
    q = p.copy()
    q[5:15, 5:15, 5:10] = 0.0  # one member misses half the blob
    stats = {"a": ensemble_stats([p, p, q])}
    _, masks, summ = attention_reference(stats, ["a"], AttentionParams())
    assert masks["a"][5:15, 5:15, 5:10].mean() > 0.5 and not masks["a"][:, :, 12:].any()
    assert summ["a"].inconsistency > 0


def test_overlap_counts_voxels_claimed_by_two_terms() -> None:
    a = np.zeros((12, 12, 12), np.float32)
    b = np.zeros_like(a)
    a[2:8] = 0.99
    b[6:10] = 0.99
    stats = {"a": ensemble_stats([a] * 3), "b": ensemble_stats([b] * 3)}
    _, masks, summ = attention_reference(stats, ["a", "b"], AttentionParams(), voxel_ml=2.0)
    assert summ["a"].overlap == summ["b"].overlap == 2 * 12 * 12 * 2.0
    assert masks["a"][6:8].all() and not masks["a"][:6].any()


def test_overlap_is_two_models_claiming_one_voxel_not_two_means() -> None:
    """Softmax members: model A says a, model B says b on the same voxels. No ensemble mean
    passes 0.5 there, yet two models claim the voxel for two terms: the paper's overlap."""
    a1, b1 = np.zeros((10, 10, 10), np.float32), np.zeros((10, 10, 10), np.float32)
    a1[2:6] = 0.9  # model 1: a
    a2, b2 = np.zeros_like(a1), np.zeros_like(a1)
    b2[2:6] = 0.9  # model 2: b, on the same voxels
    stats = {"a": ensemble_stats([a1, a2]), "b": ensemble_stats([b1, b2])}
    assert stats["a"].mean.max() < 0.5
    _, masks, summ = attention_reference(stats, ["a", "b"], AttentionParams(iterations=0), voxel_ml=1.0)
    assert summ["a"].overlap == summ["b"].overlap == 4 * 10 * 10
    assert masks["b"][2:6].all() and not masks["b"][6:].any()


@pytest.mark.parametrize("n_targets", [1, 9, 33, 64, 65, 130])
def test_attention_bits_hold_every_target(n_targets: int) -> None:
    """Target k in bit k % 64 of word k // 64: the 33rd target and beyond are kept (a uint32 map
    dropped them), each word as narrow as its targets allow."""
    shape = (6, 5, n_targets + 2)
    words = attention_words(shape, n_targets)
    assert len(words) == -(-n_targets // 64) and words[0].dtype.itemsize == (
        1 if n_targets <= 8 else 2 if n_targets <= 16 else 4 if n_targets <= 32 else 8)
    for k in range(n_targets):  # target k's attention: the slice z = k only
        w = words[k // 64]
        w[:, :, k] |= w.dtype.type(1) << w.dtype.type(k % 64)
    for k in range(n_targets):
        m = attention_bit(words, k)
        assert m[:, :, k].all() and m.sum() == 30, k
