"""Multi-index hashing equals brute force; groups, keep policy and ids are deterministic."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curator.dedup.group import Member, components, group_id, pick_kept, why_kept
from curator.dedup.index import HashIndex


def brute(codes: np.ndarray, queries: np.ndarray, radius: int) -> set[tuple[int, int]]:
    return {(qi, int(i)) for qi, q in enumerate(queries) for i in np.nonzero(np.bitwise_count(codes ^ q) <= radius)[0]}


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), radius=st.integers(0, 9), chunks=st.integers(4, 8))
def test_index_finds_exactly_what_brute_force_finds(seed: int, radius: int, chunks: int) -> None:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**63, 300, dtype=np.int64).astype(np.uint64)
    # near copies of stored codes plus random codes, so every radius has hits and misses
    flips = np.uint64(1) << rng.integers(0, 64, (300, 6)).astype(np.uint64)
    near = base.copy()
    for j in range(rng.integers(0, 7)):
        near ^= flips[:, j]
    queries = np.concatenate([near[:40], rng.integers(0, 2**63, 20, dtype=np.int64).astype(np.uint64)])
    qi, ii, d = HashIndex(base, chunks=chunks).query(queries, radius)
    assert set(zip(qi.tolist(), ii.tolist(), strict=True)) == brute(base, queries, radius)
    assert np.array_equal(d, np.bitwise_count(base[ii] ^ queries[qi]))


def test_index_rejects_a_bad_chunk_count_and_a_search_it_cannot_afford() -> None:
    with pytest.raises(ValueError):
        HashIndex(np.zeros(3, dtype=np.uint64), chunks=0)
    with pytest.raises(ValueError, match="more chunks"):
        HashIndex(np.zeros(3, dtype=np.uint64), chunks=1).query(np.zeros(1, dtype=np.uint64), radius=9)


def test_components_join_chains_and_ignore_singletons() -> None:
    assert components(["a", "b", "c", "d", "e"], [("c", "b"), ("b", "a"), ("d", "e")]) == [["a", "b", "c"], ["d", "e"]]
    assert components(["x"], []) == []


def test_group_id_depends_only_on_members() -> None:
    assert group_id(["b", "a"]) == group_id(["a", "b"]) != group_id(["a", "c"])


MEMBERS = [Member("A__1", "A", "1.0", 2, 100), Member("B__1", "B", "2.10", 2, 50), Member("C__1", "C", "2.9", 5, 10)]


@pytest.mark.parametrize(("policy", "prefer", "kept"), [
    (("terms", "version"), (), "C__1"),  # most annotated structures
    (("version", "terms"), (), "B__1"),  # 2.10 is newer than 2.9
    (("voxels",), (), "A__1"),
    (("datasets", "terms"), ("B", "A"), "B__1"),
    ((), (), "A__1"),  # case id decides alone
])
def test_keep_policy(policy, prefer, kept) -> None:
    assert pick_kept(MEMBERS, policy, prefer).case_id == kept


def test_why_kept_names_the_deciding_criterion() -> None:
    a, b = MEMBERS[2], MEMBERS[0]
    assert "more annotated structures (5 vs 2)" in why_kept(a, b, ("terms", "version"))
    assert "newer dataset version" in why_kept(MEMBERS[1], b, ("terms", "version"))
    # each reads after "the kept member has" (it said "has KiTS23 comes first in prefer_datasets")
    assert why_kept(a, b, ("datasets",), (a.dataset,)) == f"the dataset listed first in prefer_datasets ({a.dataset})"
    assert why_kept(a, a, ()) == "nothing the others lack (identical by every criterion)"


def test_keep_order_is_transitive_when_version_schemes_mix() -> None:
    """BTCV 2015, CT_ORG '1', FLARE22 2022: judged pair by pair, a year against a release number
    was a tie while 2022 beat 2015 — a circular order; FLARE22 was kept and CT_ORG's row said
    "the kept member has first case id alphabetically". With mixed schemes the version criterion
    is set aside for the group, and every reason given is one the kept member wins."""
    group = [Member("BTCV__1", "BTCV", "2015", 1, 100), Member("CT_ORG__volume-1", "CT_ORG", "1", 1, 100),
             Member("FLARE22__1", "FLARE22", "2022", 1, 100)]
    for order in (group, group[::-1], [group[1], group[2], group[0]]):
        kept = pick_kept(order, ("version",))
        assert kept.case_id == "BTCV__1"
        for other in group:
            if other is not kept:
                assert why_kept(kept, other, ("version",), (), group).startswith("the first case id alphabetically")
    # one scheme across the group: versions decide
    years = [group[0], group[2]]
    assert pick_kept(years, ("version",)).case_id == "FLARE22__1"
    assert "newer dataset version (2022 vs 2015)" in why_kept(group[2], group[0], ("version",), (), years)


def test_small_scan_tier_pairs_nearest_compatible_small_scans() -> None:
    from curator.dedup.hashing import SlabHashes
    from curator.dedup.search import HashKeys, SearchSettings, find_candidates

    rng = np.random.default_rng(0)
    base = rng.normal(size=64).astype(np.float32)

    def unit(v: np.ndarray) -> np.ndarray:
        return (v / np.linalg.norm(v)).astype(np.float32)

    none = SlabHashes((), ())
    keys = [HashKeys("a", "1", None, none, (40.0, 34.0, 39.0), unit(base)),
            HashKeys("a_copy", "2", None, none, (40.0, 34.0, 10.0), unit(base + 0.1 * rng.normal(size=64))),
            HashKeys("other_size", "3", None, none, (80.0, 34.0, 39.0), unit(base)),  # in-plane 2x: incompatible
            HashKeys("far", "4", None, none, (40.0, 34.0, 39.0), unit(rng.normal(size=64))),
            HashKeys("big", "5", None, none, (400.0, 340.0, 390.0), unit(base))]  # not small
    s = SearchSettings(small_neighbours=1)
    found = {(c.a, c.b): c.tiers for c in find_candidates(keys, s)}
    assert found[("a", "a_copy")] == {"small"}  # mutual nearest
    assert not any({"other_size", "big"} & set(pair) for pair in found)  # wrong size, not small
    assert len(found) == 2  # + "far" with its own nearest: every small scan gets its neighbours
    assert not find_candidates(keys, SearchSettings(small_neighbours=0))


def test_clean_prefers_the_member_ingest_did_not_warn_about() -> None:
    """A copy ingest warned about (e.g. CT stored with a +1024 offset) loses to a clean one, even
    when it has more annotated structures; the reason says so."""
    offset = Member("KiTS23__case_00005", "KiTS23", "1", 3, 100, warnings=1)
    clean = Member("MSD_Spleen__spleen_2", "MSD_Spleen", "1", 1, 100)
    assert pick_kept([offset, clean], ("clean", "terms")).case_id == clean.case_id
    assert pick_kept([offset, clean], ("terms", "clean")).case_id == offset.case_id
    assert "fewer ingest warnings (0 vs 1" in why_kept(clean, offset, ("clean", "terms"))


def test_sequences_of_one_study_never_join_one_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dataset A holds T1 and T1gd of one study, dataset B copies of both: the cross-sequence pair
    A.T1 ~ B.T1gd verifies too (same patient, same frame), which chained all four into one group
    and dropped one of A's sequences. With the study keys the groups stay {A.T1, B.T1} and
    {A.T1gd, B.T1gd}; without them the old chain is what one gets."""
    from types import SimpleNamespace

    from curator.dedup import detect
    from curator.dedup.detect import verify_candidates
    from curator.dedup.search import Candidate
    from curator.dedup.verify import VerifySettings

    def fake_compare(ta: str, tb: str, ratio: float) -> SimpleNamespace:  # same sequence matches best
        same = ta.split("__")[1] == tb.split("__")[1]
        return SimpleNamespace(detail=0.99 if same else 0.95, score=0.99 if same else 0.94)

    monkeypatch.setattr(detect, "compare", fake_compare)
    monkeypatch.setattr(detect, "accepts", lambda m, settings: True)  # every candidate verifies
    # the cross-sequence pairs have the closer hashes, so they come first by hash strength
    cands = [Candidate("A__t1", "B__t1", {"global"}, 6), Candidate("A__t1gd", "B__t1gd", {"global"}, 6),
             Candidate("A__t1", "B__t1gd", {"global"}, 2), Candidate("A__t1gd", "B__t1", {"global"}, 2)]
    study = {"A__t1": "A/p1", "A__t1gd": "A/p1", "B__t1": "B/p1", "B__t1gd": "B/p1"}
    pairs = verify_candidates(cands, lambda cid: cid, VerifySettings(), study)
    groups = components(sorted(study), [(p.a, p.b) for p in pairs if p.accepted])
    assert groups == [["A__t1", "B__t1"], ["A__t1gd", "B__t1gd"]]
    assert {(p.a, p.b) for p in pairs if not p.accepted} == {("A__t1", "B__t1gd"), ("A__t1gd", "B__t1")}
    chained = verify_candidates(cands, lambda cid: cid, VerifySettings())
    assert components(sorted(study), [(p.a, p.b) for p in chained if p.accepted]) == [sorted(study)]


def test_the_default_policy_keeps_the_whole_scan_over_a_cropped_copy() -> None:
    """A 9-slice crop of a 30-slice CT was kept over it because its case id sorted first."""
    from curator.dedup.stage import DedupConfig

    crop = Member("ArchiveB__aztop", "ArchiveB", "1", 0, 512 * 512 * 9, fov_ml=1200.0)
    whole = Member("RealA__ctsm", "RealA", "1", 0, 512 * 512 * 30, fov_ml=4000.0)
    keep = DedupConfig().keep
    assert pick_kept([crop, whole], keep).case_id == "RealA__ctsm"
    assert why_kept(whole, crop, keep) == "a larger field of view (4,000 vs 1,200 ml)"
    resampled = Member("ArchiveB__coarse", "ArchiveB", "1", 0, 256 * 256 * 15, fov_ml=3900.0)  # within 5 %: a tie
    assert pick_kept([resampled, whole], keep).case_id == "ArchiveB__coarse"


def test_global_tier_verifies_each_scans_nearest_not_every_pair_within_the_radius() -> None:
    """Patients of one protocol on one grid share most global-hash bits: 20 % of all pairs of 200
    synthetic patients lay within the radius, and every one of them was verified (time growing as
    the square of the scans). Each scan now proposes its `global_neighbours` nearest by the hash's
    DCT coefficients, and a copy of a scan is the nearest among them."""
    from curator.dedup.detect import keys_of
    from curator.dedup.features import HashSettings, scan_features
    from curator.dedup.search import SearchSettings, find_candidates
    from curator.testing.perturb import crop
    from curator.testing.phantoms import Subject, grid, render

    g = grid((48, 48, 32), (6.0, 6.0, 9.0), "RAS", center=(0.0, -10.0, 20.0))
    scans = {}
    for i in range(36):
        img, _ = render(Subject.random(1000 + i, tumor=False, cyst=False), g, "CT", seed=1000 + i)
        scans[f"p{i:02d}"] = (g, np.rint(img).astype(np.int16))
    for i in (3, 8):  # a copy cropped in-plane, as another dataset would publish it
        g2, img = crop(g, scans[f"p{i:02d}"][1], (slice(3, 45), slice(2, 46), slice(0, 32)))
        scans[f"p{i:02d}_copy"] = (g2, img)
    features = {k: scan_features(img, geo, HashSettings()) for k, (geo, img) in scans.items()}
    keys = keys_of(features)

    def global_pairs(**kw: int) -> set[tuple[str, str]]:
        return {(c.a, c.b) for c in find_candidates(keys, SearchSettings(**kw)) if "global" in c.tiers}

    every = global_pairs(global_neighbours=0)
    nearest = global_pairs(global_neighbours=1)
    assert len(every) > 2 * len(scans)  # the crowd this guards against: many pairs within the radius
    assert len(nearest) <= len(scans)
    assert {("p03", "p03_copy"), ("p08", "p08_copy")} <= nearest


def test_slab_tier_queries_the_index_in_bounded_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The slab tier asks the index about a bounded block of slabs at a time (each query examines
    up to max_slab_hits entries per probe before the distance check, so asking about every slab
    at once held ~10 kB per slab: 670 MB for 1,000 look-alike scans), and finds the same pairs."""
    from curator.dedup import search
    from curator.dedup.hashing import SlabHashes
    from curator.dedup.index import HashIndex
    from curator.dedup.search import HashKeys, SearchSettings, find_candidates

    rng = np.random.default_rng(3)
    keys = []
    for n in range(30):  # look-alikes: every scan shares slabs with its neighbour, one with a short scan
        codes = rng.integers(0, 2**63, size=12, dtype=np.uint64).tolist()
        if keys:
            codes[:4] = list(keys[-1].slabs.hashes[6:10])  # four slabs of the previous scan, shifted
        keys.append(HashKeys(f"s{n:02d}", str(n), None, SlabHashes(tuple(codes), tuple(5.0 * k for k in range(12)))))
    keys.append(HashKeys("short", "x", None, SlabHashes(keys[3].slabs.hashes[:3], (0.0, 5.0, 10.0))))
    s = SearchSettings()
    whole = {(c.a, c.b): (c.tiers, c.slab_votes, c.slab_offset_mm) for c in find_candidates(keys, s)}
    sizes: list[int] = []
    query = HashIndex.query

    def counted(self: HashIndex, queries: np.ndarray, *a: object, **k: object) -> object:
        sizes.append(int(queries.size))
        return query(self, queries, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(HashIndex, "query", counted)
    monkeypatch.setattr(search, "SLAB_QUERY_BLOCK", 7, raising=False)
    blocked = {(c.a, c.b): (c.tiers, c.slab_votes, c.slab_offset_mm) for c in find_candidates(keys, s)}
    assert sum(len(k.slabs.hashes) for k in keys) > 7 * 40  # many blocks
    assert sizes and max(sizes) <= 7
    assert blocked == whole
    assert ("s00", "s01") in whole and ("s03", "short") in whole  # the planted pairs are found


def test_identical_voxel_arrays_under_different_headers_are_one_scan() -> None:
    """A copy whose header direction was rewritten (slice direction negated, columns swapped)
    holds byte-identical voxels but hashes differently in RAS: it was never a candidate, and a
    train/test leak passed the release. Equal voxel hashes now make an accepted candidate (tier
    ``voxels``) even when verification cannot align the two; equal exact hashes stay ``exact``
    alone, and a scan without a voxel hash is matched by nothing new."""
    from curator.dedup.detect import verify_candidates
    from curator.dedup.hashing import SlabHashes
    from curator.dedup.search import HashKeys, SearchSettings, find_candidates
    from curator.dedup.verify import VerifySettings

    none = SlabHashes((), ())
    keys = [HashKeys("A__orig", "e1", None, none, voxels="v1"),
            HashKeys("B__flipz", "e2", None, none, voxels="v1"),
            HashKeys("C__same", "e1", None, none, voxels="v1"),
            HashKeys("D__other", "e3", None, none, voxels="v2"),
            HashKeys("E__blank", "e4", None, none, voxels=None),
            HashKeys("F__blank", "e5", None, none, voxels=None)]
    cands = find_candidates(keys, SearchSettings())
    assert {(c.a, c.b): sorted(c.tiers) for c in cands} == {
        ("A__orig", "B__flipz"): ["voxels"], ("A__orig", "C__same"): ["exact"], ("B__flipz", "C__same"): ["voxels"]}
    pairs = verify_candidates(cands, lambda cid: None, VerifySettings())  # no thumbnails: nothing aligns
    assert components([k.case_id for k in keys], [(p.a, p.b) for p in pairs if p.accepted]) == [
        ["A__orig", "B__flipz", "C__same"]]
