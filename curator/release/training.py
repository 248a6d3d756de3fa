"""The training view of a release: what :class:`curator.torch.PatchDataset` and the exports
leave out by default.

* **Dropped duplicates**: members of a ``duplicates`` group that the keep policy did not keep
  (``kept = false``) — the same scan as the kept member, so training on both weights it twice
  and, across folds, validates on a training scan. For a request of terms, a group is used
  through the member holding the most of them in people's labels (``original``, ``revised``),
  then in all the requested layers (the kept one on a tie; labels QC excluded do not count): a
  dropped KiTS copy with its tumour stands in for a kept TotalSegmentator copy without one
  (``TrainingView.stand_ins``), but pseudo labels never outweigh a person's, so a copy with a
  pseudo liver and spleen does not replace one whose liver and spleen people drew — and never
  a copy with more ingest warnings than the kept one
  (a CT copy stored +1024 HU off: the keep policy dropped it for that; ``TrainingView.passed_over``).
  The choice is made among the cases a selection (``where``) holds: a group whose kept member
  it leaves out is used through the best member it selects, so a selection never loses a case
  to a copy it does not contain.
* **QC-excluded labels**: ``labels`` rows with ``qc_decision = 'exclude'`` (the filter's
  ``qc.training_filter`` in ``release.json``); the (case, term, layer) is treated as not
  annotated, so the term is read from the next layer that holds it, or is absent. Not in
  cases of the release's ``test`` split unless asked (``qc_filter_test=True``,
  ``--qc-filter-test``): dropping a test label QC flagged would silently shrink the official
  test set towards the easy cases; those labels are used, and listed
  (``TrainingView.test_flagged``).

Both stay in the release's tables (nothing is deleted); pass ``duplicates=True`` /
``qc_filter=False`` to the loader or ``--with-duplicates`` / ``--no-qc-filter`` to the exports
to use them anyway.
"""

from __future__ import annotations

import collections
import functools
import warnings
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from curator.release.query import Release
from curator.store import CaseStore

if TYPE_CHECKING:
    from curator.errors import ReleaseError
    from curator.taxonomy.model import Taxonomy


@dataclass(frozen=True)
class TrainingView:
    dropped_duplicates: frozenset[str] = frozenset()
    # kept member -> the member of its group used instead: it holds more of the requested terms
    stand_ins: Mapping[str, str] = field(default_factory=dict)
    # member holding more of the requested terms than the one used -> why it is not used
    passed_over: Mapping[str, str] = field(default_factory=dict)
    # member used although it has more ingest warnings than its group's kept member, which the
    # selection leaves out (or which is used too, with duplicates) -> what to know
    caveats: Mapping[str, str] = field(default_factory=dict)
    excluded: Mapping[str, frozenset[tuple[str, str]]] = field(default_factory=dict)  # case -> {(term, layer)}
    absent: Mapping[str, frozenset[str]] = field(default_factory=dict)  # case -> terms annotated as absent
    # each of dropped_duplicates -> the member of its group used instead (what a study missing
    # that sequence is told)
    used_for: Mapping[str, str] = field(default_factory=dict)
    # test case -> its labels QC excluded that are used all the same (no qc_filter_test):
    # (term, layer, qc_reason)
    test_flagged: Mapping[str, tuple[tuple[str, str, str], ...]] = field(default_factory=dict)

    def labels_excluded(self, case_id: str) -> frozenset[tuple[str, str]]:
        return self.excluded.get(case_id, frozenset())

    def labels_absent(self, case_id: str) -> frozenset[str]:
        """Terms the case's dataset annotates that have no voxel in it (a spleen-less scan of a
        dataset that labels spleens): annotated, their mask all background — not "unknown",
        which a store alone cannot tell, as it keeps no empty label."""
        return self.absent.get(case_id, frozenset())


def training_view(release: Release, *, duplicates: bool = False, qc_filter: bool = True,
                  terms: Sequence[str] = (), layers: Sequence[str] = (),
                  selected: Collection[str] | None = None, qc_filter_test: bool = False) -> TrainingView:
    """What the training view leaves out of ``release`` (nothing for tables the release lacks).

    With ``terms`` (and the ``layers`` they are read from), each duplicate group is used through
    the member holding the most of them — in people's labels first (``original``, ``revised``),
    then in any of ``layers``; labels QC excluded do not count (with ``qc_filter``) — the kept one
    on a tie: the keep policy weighs every annotated structure, so the kept copy of a KiTS scan
    can be a TotalSegmentator copy without its tumour, and the tumour would leave the training
    set with the dropped copy. A member with more ingest warnings than the kept one is never used
    instead of it. Still one member per group (the splits put a group on one side).

    ``selected``: the case ids a selection holds (the loader's and the exports' ``where``); each
    group is then used through the best member among them, and ``dropped_duplicates`` lists the
    selected members left out. None: the whole release.

    ``qc_filter`` leaves out the labels QC excluded in the cases of the train and val splits;
    in the ``test`` split's only with ``qc_filter_test`` as well (an evaluation set is not
    filtered towards easy cases by default): the test labels it keeps are ``test_flagged``."""
    names = set(release.table_names())
    columns = set(release.sql("select * from labels limit 0").columns) if "labels" in names else set()
    excluded: dict[str, set[tuple[str, str]]] = {}
    flagged: dict[str, list[tuple[str, str, str]]] = {}
    if qc_filter and "qc_decision" in columns:
        tests = _test_cases(release, names) if not qc_filter_test else set()
        reason = "qc_reason" if "qc_reason" in columns else "null"
        for cid, term, layer, why in release.sql(
                f"select case_id, term_id, layer, {reason} from labels where qc_decision = 'exclude' "
                "order by case_id, term_id, layer").fetchall():
            if cid in tests:
                flagged.setdefault(cid, []).append((term, layer, why or ""))
            else:
                excluded.setdefault(cid, set()).add((term, layer))
    dropped: frozenset[str] = frozenset()
    used_for: dict[str, str] = {}
    stand_ins: dict[str, str] = {}
    passed_over: dict[str, str] = {}
    caveats: dict[str, str] = {}
    if not duplicates and "duplicates" in names:
        rows = release.sql("select group_id, case_id, kept from duplicates order by group_id, case_id").fetchall()
        kept_of = {gid: cid for gid, cid, kept in rows if kept}
        if selected is not None:
            chosen = set(selected)
            rows = [r for r in rows if r[1] in chosen]
        use, stand_ins, passed_over, caveats = _members_used(release, rows, terms if "store_terms" in names else (),
                                                             layers, kept_of, excluded)
        dropped = frozenset(r[1] for r in rows if r[1] not in use)
        used_in = {gid: cid for gid, cid, _ in rows if cid in use}
        used_for = {cid: used_in.get(gid, kept_of.get(gid, "")) for gid, cid, _ in rows if cid in dropped}
    elif "duplicates" in names:  # every member is used: one with more ingest warnings than its kept one is said
        caveats = _copies_warned(release, selected)
    absent: dict[str, set[str]] = {}
    if {"annotated", "present"} <= columns:
        original = " and origin = 'original'" if "origin" in columns else ""
        for cid, term in release.sql("select case_id, term_id from labels where annotated and not present"
                                     + original).fetchall():
            absent.setdefault(cid, set()).add(term)
    return TrainingView(dropped, stand_ins, passed_over, caveats, {k: frozenset(v) for k, v in excluded.items()},
                        {k: frozenset(v) for k, v in absent.items()}, used_for,
                        {k: tuple(v) for k, v in flagged.items()})


def _test_cases(release: Release, names: Collection[str]) -> set[str]:
    """The case ids of the release's ``test`` split (none without a splits table)."""
    if "splits" not in names:
        return set()
    return {r[0] for r in release.sql("select case_id from splits where split = 'test'").fetchall()}


def label_only_problem(release: Release, where: str, join: str = "", splits: str = "") -> ReleaseError | None:
    """Why a selection with images is empty when the cases ``where`` selects are label-only (the
    release holds their labels but no image: ``has_image`` false, e.g. KiTS23's segmentations
    downloaded without the imaging), else None. ``join``/``splits``: the selection's join of the
    splits table and its filter on it (the loader's and the exports' queries, over
    ``preprocessed p`` and ``cases c``)."""
    from curator.errors import ReleaseError

    ((n, datasets),) = release.sql(
        "select count(*), string_agg(distinct dataset, ', ' order by dataset) from preprocessed p "
        f"join cases c using (case_id, dataset, modality) {join} where not p.has_image and ({where}){splits}"
    ).fetchall()
    if not n:
        return None
    chosen = "selected" if where.strip().lower() == "true" else f"WHERE {where} selects"
    return ReleaseError("release_error", f"the {n} case(s) {chosen} have no image: they are label-only (the "
                        f"release holds their labels, not their scans; datasets: {datasets})",
                        path=str(release.path),
                        remedy="download the images of these datasets into their source folders (e.g. KiTS23's "
                        "imaging.nii.gz beside each segmentation), run the pipeline again and release a new "
                        "version; or select cases that have an image")


# the layers holding people's labels: a dataset's own annotation, and pseudo labels a person reviewed
PEOPLES_LAYERS = ("original", "revised")


def _members_used(release: Release, rows: list[tuple[str, str, bool]], terms: Sequence[str],
                  layers: Sequence[str], kept_of: Mapping[str, str] | None = None,
                  excluded: Mapping[str, Collection[tuple[str, str]]] | None = None,
                  ) -> tuple[set[str], dict[str, str], dict[str, str], dict[str, str]]:
    """The member used of each group in ``rows`` (group id, case id, kept), the stand-ins (kept
    member -> the member used instead) and the members passed over (-> why).

    A group's base is its kept member, or, when ``rows`` leave it out (a selection), the member
    with the fewest ingest warnings (then the most requested terms, then the first case id). The
    member used is the one holding the most of ``terms`` (as the loader reads them: from
    ``layers``, a term or parts that complete it, with voxels; a (term, layer) in
    ``excluded[case]`` — QC excluded it — is not held) read from people's layers
    (:data:`PEOPLES_LAYERS`), then from any of ``layers``, among those with no more
    ingest warnings than the base, the base on a tie: a copy's pseudo labels never outweigh
    another copy's annotations. ``kept_of`` (group id -> its kept member, selected or not) gives
    the caveats: a member used with more ingest warnings than its group's kept member, which
    ``rows`` leave out."""
    groups: dict[str, list[tuple[str, bool]]] = collections.defaultdict(list)
    for gid, cid, is_kept in rows:
        groups[gid].append((cid, bool(is_kept)))
    count: dict[str, tuple[int, int]] = {}  # member -> (terms from people's layers, terms from any layer)
    if terms:
        from curator.store import LAYERS

        tax = release.taxonomy
        parts = {t: with_parts(tax, t) for t in terms}
        wanted = {p for ps in parts.values() for p in ps}
        in_rows = {cid for _, cid, _ in rows}
        held_by: dict[str, dict[str, set[str]]] = collections.defaultdict(dict)
        for cid, term, layer, voxels in release.sql("select case_id, term_id, layer, voxels from store_terms").fetchall():
            if cid in in_rows and term in wanted and voxels:
                held_by[cid].setdefault(layer, set()).add(term)
        for cid in in_rows:  # the terms the loader would read from the member (usable_terms' rule)
            usable = usable_parts(held_by[cid], parts, layers or LAYERS, (excluded or {}).get(cid, ()))
            used = [term_parts(t, parts[t], usable, tax) for t in terms]
            count[cid] = (sum(bool(u) and all(usable[p] in PEOPLES_LAYERS for p in u) for u in used),
                          sum(bool(u) for u in used))

    def held(c: str) -> tuple[int, int]:  # compared as a tuple: people's labels first
        return count.get(c, (0, 0))

    warned = _ingest_warnings(release)
    use: set[str] = set()
    stand_ins: dict[str, str] = {}
    passed_over: dict[str, str] = {}
    caveats: dict[str, str] = {}
    for gid, members in groups.items():
        keeper = next((c for c, k in members if k), None)
        base = keeper if keeper is not None else min(
            (c for c, _ in members), key=lambda c: (len(warned.get(c, ())), tuple(-n for n in held(c)), c))
        clean = [c for c, _ in members if len(warned.get(c, ())) <= len(warned.get(base, ()))]
        best = max(clean, key=lambda c: (held(c), c == base))  # on a tie, the base
        if held(best) <= held(base):
            best = base
        use.add(best)
        if best != base and keeper is not None:
            stand_ins[keeper] = best
        away = (kept_of or {}).get(gid) if keeper is None else None
        if away is not None and len(warned.get(best, ())) > len(warned.get(away, ())):
            kinds = _more_warnings(warned, best, away)
            caveats[best] = (f"it stands for its duplicate group although it has more ingest warnings ({kinds}; see "
                             f"problems) than the group's kept {away}, which the selection leaves out")
        for c, _ in members:
            if held(c) > held(best) and c not in clean:
                kinds = _more_warnings(warned, c, base)
                passed_over[c] = (f"it holds more of the requested terms than {best}, but has more ingest warnings "
                                  f"({len(warned[c])} vs {len(warned.get(base, ()))}: {kinds}; see problems)")
    return use, stand_ins, passed_over, caveats


def _copies_warned(release: Release, selected: Collection[str] | None) -> dict[str, str]:
    """With every duplicate used (``duplicates=True``): each member (of ``selected``, None: all)
    with more ingest warnings than its group's kept member -> what to know (a CT copy stored
    +1024 HU off is the kept scan again with its intensities shifted: a normalisation computed
    over both is shifted too)."""
    warned = _ingest_warnings(release)
    rows = release.sql("select group_id, case_id, kept from duplicates order by group_id, case_id").fetchall()
    kept_of = {gid: cid for gid, cid, kept in rows if kept}
    out: dict[str, str] = {}
    for gid, cid, kept in rows:
        keeper = kept_of.get(gid)
        if kept or keeper is None or (selected is not None and cid not in selected):
            continue
        if len(warned.get(cid, ())) > len(warned.get(keeper, ())):
            out[cid] = (f"it has more ingest warnings ({_more_warnings(warned, cid, keeper)}; see problems) than its "
                        f"duplicate group's kept {keeper}, which is used too (duplicates are: --with-duplicates, "
                        "duplicates=True); the keep policy dropped it for them")
    return out


def _more_warnings(warned: Mapping[str, list[str]], case: str, than: str) -> str:
    """The kinds of ``case``'s ingest warnings that ``than`` lacks (all of them when it has each kind)."""
    return ", ".join(sorted(set(warned[case]) - set(warned.get(than, ()))) or sorted(set(warned[case])))


def _ingest_warnings(release: Release) -> dict[str, list[str]]:
    """case id -> the kinds of its ingest warnings (the keep policy's ``clean`` criterion counts
    them: a CT copy stored +1024 HU off has one)."""
    if "problems" not in release.table_names():
        return {}
    out: dict[str, list[str]] = collections.defaultdict(list)
    for cid, kind in release.sql("select case_id, kind from problems where stage = 'ingest' and severity = 'warning' "
                                 "and case_id is not null").fetchall():
        out[cid].append(kind)
    return out


def with_parts(tax: Taxonomy, term: str) -> tuple[str, ...]:
    """``term`` and the terms whose union makes it (its parts, recursively) in ``tax``."""
    return (term, *tax.descendants(term)) if tax.get(term) is not None else (term,)


def term_parts(term: str, parts: Sequence[str], held: Collection[str], tax: Taxonomy | None = None,
               ) -> tuple[str, ...]:
    """The parts of ``term`` (itself and its descendants, ``parts``) whose union is ``term`` in a
    case holding ``held``: every held part when the term itself is held or the held parts
    complete one of its partitions (in ``tax``, the bundled taxonomy by default), else none —
    MSD Hepatic Vessel's tumour alone is no liver, and one kidney is not the kidneys."""
    if tax is None:
        from curator.taxonomy import load_taxonomy

        tax = load_taxonomy()
    return _term_parts(tax, term, tuple(p for p in parts if p in held))


@functools.lru_cache(maxsize=4096)
def _term_parts(tax: Taxonomy, term: str, have: tuple[str, ...]) -> tuple[str, ...]:
    if not have or term in have:
        return have
    return have if term in tax.derived(have) else ()


def usable_terms(store: CaseStore, parts: Mapping[str, Sequence[str]], layers: Sequence[str],
                 excluded: Collection[tuple[str, str]], absent: Collection[str] = ()) -> dict[str, str]:
    """Part -> layer to read it from, for the requested terms' ``parts`` (a term and its
    descendants), each from the first of ``layers`` that holds it and whose (part, layer) is not
    ``excluded``; a part in ``absent`` (annotated, no voxel: :meth:`TrainingView.labels_absent`)
    is held by ``original`` with an empty mask. A requested term loses all its parts when one
    of them (or the term itself, a derived term judged as a whole) is excluded with no later
    layer to stand in: training on the rest of its parts would call the excluded part background."""
    return usable_parts({layer: store.terms(layer) for layer in store.layers()}, parts, layers, excluded, absent)


def usable_parts(held_by: Mapping[str, Collection[str]], parts: Mapping[str, Sequence[str]], layers: Sequence[str],
                 excluded: Collection[tuple[str, str]], absent: Collection[str] = ()) -> dict[str, str]:
    """:func:`usable_terms` of a case whose store holds ``held_by[layer]`` in each layer (e.g.
    from the release's ``store_terms`` table, without opening the store)."""
    wanted = list(dict.fromkeys(p for ps in parts.values() for p in ps))

    def first_layers(exclude: Collection[tuple[str, str]]) -> dict[str, str]:
        out: dict[str, str] = {}
        for layer in layers:
            for t in wanted:
                if t in held_by.get(layer, ()) and (t, layer) not in exclude:
                    out.setdefault(t, layer)
        return out

    held = first_layers(excluded)
    if absent and "original" in layers:
        rank = {x: i for i, x in enumerate(layers)}
        for p in wanted:
            if p in absent and (p, "original") not in excluded and rank["original"] < rank.get(held.get(p, ""), 99):
                held[p] = "original"
    if not excluded:
        return held
    before = first_layers(())
    fine = [term for term, ps in parts.items()
            if not any(p in before and p not in held for p in ps)  # a part lost to QC
            and not any((term, held[p]) in excluded for p in ps if p in held and p != term)]
    # the parts of the requested terms still usable whole: a part another requested term shares
    # (kidney_tumor inside kidney_mass) stays for that term when only the larger one is lost
    keep = {p for term in fine for p in parts[term]}
    return {p: layer for p, layer in held.items() if p in keep}


def check_request(release: Release, terms: Sequence[str], layers: Sequence[str], *, unheld: str = "error",
                  warn: bool = True) -> dict[str, str]:
    """Refuse term ids the taxonomy and the release do not know (naming the close ones), a term
    requested twice and unknown layers; a term no case of the release holds in any of
    ``layers`` (per its ``store_terms``) is refused too, or only warned about with
    ``unheld="warn"`` — rather than train on all-background masks without a word. Returns the
    warnings by term (also a term only annotated as absent), given as ``UserWarning`` unless
    ``warn`` is false: the caller then gives them once it knows it will not refuse the request
    anyway."""
    from curator.errors import ReleaseError
    from curator.store import LAYERS

    bad_layers = [x for x in layers if x not in LAYERS]
    if not layers or bad_layers:
        raise ReleaseError("release_error", f"unknown label layers {bad_layers or list(layers)}",
                           remedy=f"give some of {', '.join(LAYERS)}, by priority")
    if not terms:
        raise ReleaseError("release_error", "no terms requested", remedy="give at least one term id")
    repeated = sorted(t for t, n in collections.Counter(terms).items() if n > 1)
    if repeated:  # label i + 1 is terms[i]: a second copy makes an empty label, a gap nnU-Net refuses
        raise ReleaseError("release_error", f"term {', '.join(map(repr, repeated))} requested more than once",
                           remedy="give each term id once")
    rows = (release.sql("select case_id, term_id, layer from store_terms").fetchall()
            if "store_terms" in release.table_names() else [])
    held: dict[str, set[str]] = {}  # term -> layers
    in_layers: dict[str, set[str]] = {}  # case -> terms held in the requested layers
    for case, term, layer in rows:
        held.setdefault(term, set()).add(layer)
        if layer in layers:
            in_layers.setdefault(case, set()).add(term)
    tax = release.taxonomy
    absent: Mapping[str, frozenset[str]] | None = None
    notes: dict[str, str] = {}
    for t in terms:
        if t not in held and tax.get(t) is None:
            hint = tax.close_ids(t)
            raise ReleaseError("release_error", f"unknown term id {t!r}",
                               remedy=(f"did you mean {', '.join(hint)}? " if hint else "")
                               + "the release's terms table lists its term ids (`select term_id, name from terms`)")
        parts = with_parts(tax, t)
        if not any(term_parts(t, parts, have, tax) for have in in_layers.values()):
            if absent is None:  # read once, only when some term is unheld
                absent = training_view(release).absent
            negatives = sum(t in terms_absent for terms_absent in absent.values())
            if negatives and "original" in layers:  # true negatives only: allowed, but said
                notes[t] = (f"no case of the release has a voxel of {t!r}; {negatives} case(s) annotate it "
                            "as absent (their masks are empty)")
                continue
            other = sorted({layer for p in parts for layer in held.get(p, set())})
            some = any(p in have for have in in_layers.values() for p in parts)
            problem = ReleaseError("release_error", f"no case of the release holds {t!r} in layers {list(layers)}"
                                   + (" (some cases hold parts of it, none all of one of its partitions)"
                                      if some else ""), path=str(release.path),
                                   remedy=(f"it is held in layers {other}: add them to the layers"
                                           if other and not some else
                                           "query store_terms for the terms this release holds"))
            if unheld != "warn":
                raise problem
            notes[t] = f"{problem} (its masks will be empty)"
    if warn:
        for note in notes.values():
            warnings.warn(note, UserWarning, stacklevel=3)
    return notes


def held_elsewhere(release: Release, case_ids: Collection[str], terms: Sequence[str], layers: Sequence[str],
                   view: TrainingView) -> tuple[collections.Counter[tuple[str, tuple[str, ...]]], int]:
    """For a request none of ``case_ids`` can serve from ``layers``: ``(term, the other layers
    holding it) -> cases`` (a term held only as a pseudo label, say), and how many cases hold some
    but not all of ``terms`` in ``layers``."""
    from curator.store import LAYERS

    tax = release.taxonomy
    parts = {t: with_parts(tax, t) for t in terms}
    ids = set(case_ids)
    held_by = _store_terms(release, ids)
    others = [x for x in LAYERS if x not in layers]
    elsewhere: collections.Counter[tuple[str, tuple[str, ...]]] = collections.Counter()
    some = 0
    for cid in sorted(ids):
        args = (view.labels_excluded(cid), view.labels_absent(cid))
        here = usable_parts(held_by[cid], parts, layers, *args)
        have = [t for t in terms if term_parts(t, parts[t], here, tax)]
        some += 0 < len(have) < len(terms)
        wider = usable_parts(held_by[cid], parts, [*layers, *others], *args)
        for t in terms:
            used = term_parts(t, parts[t], wider, tax)
            if t not in have and used:
                elsewhere[t, tuple(x for x in others if x in {wider[p] for p in used})] += 1
    return elsewhere, some


def layer_advice(elsewhere: Mapping[tuple[str, tuple[str, ...]], int], n: int, noun: str, layers: Sequence[str],
                 option: str) -> str:
    """``the 5 selected cases hold liver in the 'pseudo' layer: add --layers original,revised,pseudo``
    (``the 1 selected case holds``, ``1 of the 5 selected cases holds``)
    from :func:`held_elsewhere`; ``option`` formats the wider layer list (``--layers {}`` for the
    exports, ``layers=({})`` for the loader)."""
    from curator.store import LAYERS

    found = sorted({x for (_, ls) in elsewhere for x in ls}, key=LAYERS.index)
    held = "; ".join(f"{'the' if k == n else f'{k} of the'} {n} selected {noun} {'holds' if k == 1 else 'hold'} {t} in the "
                     + " or ".join(f"{x!r}" for x in ls) + f" layer{'s' if len(ls) > 1 else ''}"
                     for (t, ls), k in sorted(elsewhere.items()))
    sep = "," if option.startswith("--") else ", "
    wider = sep.join(x if option.startswith("--") else repr(x) for x in [*layers, *found])
    return (f"{held}: add {option.format(wider)}"
            + (" (pseudo labels are a model's predictions, not annotations)" if "pseudo" in found else ""))


def held_terms(release: Release, case_ids: Collection[str], terms: Sequence[str], layers: Sequence[str],
               view: TrainingView) -> dict[str, list[str]]:
    """Each of ``case_ids`` -> the ``terms`` it holds in ``layers`` (itself or parts completing it,
    labels the ``view`` excludes left out), as the loader serves them."""
    tax = release.taxonomy
    parts = {t: with_parts(tax, t) for t in terms}
    held_by = _store_terms(release, set(case_ids))
    out = {}
    for cid in sorted(held_by):
        here = usable_parts(held_by[cid], parts, layers, view.labels_excluded(cid), view.labels_absent(cid))
        out[cid] = [t for t in terms if term_parts(t, parts[t], here, tax)]
    return out


def _store_terms(release: Release, ids: Collection[str]) -> dict[str, dict[str, set[str]]]:
    """Case -> layer -> the terms its store holds there (``store_terms``), for ``ids``."""
    held_by: dict[str, dict[str, set[str]]] = {cid: {} for cid in ids}
    if ids and "store_terms" in release.table_names():
        for cid, term, layer in release.sql("select case_id, term_id, layer from store_terms").fetchall():
            if cid in held_by:
                held_by[cid].setdefault(layer, set()).add(term)
    return held_by
