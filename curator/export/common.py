"""What every export shares: picking cases with SQL, building a mutually exclusive label map,
and writing a store's image and labels as NIfTI in physical units on the store grid.

Each term's label comes from the first of ``layers`` whose store layer holds it (default: the
dataset's ``original`` annotation, then ``revised`` — reviewed pseudo labels; add ``pseudo`` to
export pseudo labels too), as :class:`curator.torch.PatchDataset` reads them."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from curator.errors import InputError, ReleaseError
from curator.export.channels import onto
from curator.export.reasons import lacking, terms_usable, unknown_reasons
from curator.io.formats import WORKERS, check_memory
from curator.io.nifti import write_nifti
from curator.io.volume import Geometry, Volume
from curator.release.query import Release
from curator.release.query_errors import where_error
from curator.release.training import (
    TrainingView,
    label_only_problem,
    training_view,
    with_parts,
)
from curator.store import CaseStore

if TYPE_CHECKING:
    from curator.export.on_source import SourceCase, SourceReader
    from curator.taxonomy.model import Taxonomy

log = logging.getLogger("curator")
DEFAULT_LAYERS = ("original", "revised")
# case_id, dataset and modality mean the same in every table joined: USING makes them plain names
QUERY = """select case_id, dataset, modality, p.store, p.terms, {split} as split, c.sequence, c.study_key
from preprocessed p join cases c using (case_id, dataset, modality) {join}
where p.has_image and ({where}) order by case_id"""


@dataclass
class ExportCase:
    case_id: str
    dataset: str
    modality: str
    store: Path
    terms: list[str]
    split: str | None
    sequence: str | None = None
    study_key: str | None = None  # the sequences of one study share it


@dataclass
class ExportReport:
    folder: Path
    cases: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # case id -> why
    overlaps: dict[str, int] = field(default_factory=dict)  # case id -> voxels claimed by two terms
    notes: list[str] = field(default_factory=list)  # what the user should know about the export
    images_only: list[str] = field(default_factory=list)  # test cases written without a label (for inference)
    # case id -> requested terms its dataset does not annotate (exported with --partial: unknown there)
    unknown: dict[str, list[str]] = field(default_factory=dict)
    ignored: dict[str, int] = field(default_factory=dict)  # case id -> voxels written as the ignore label
    no_background: list[str] = field(default_factory=list)  # cases with ignore voxels and not one background voxel
    resampled: list[str] = field(default_factory=list)  # channel cases interpolated onto their study's grid
    unlabelled: dict[str, str] = field(default_factory=dict)  # each of images_only -> why it has no label
    # case id -> each of its unknown terms -> why (reasons.UNKNOWN: not annotated, QC excluded, ...)
    unknown_why: dict[str, dict[str, str]] = field(default_factory=dict)
    nonempty: dict[str, list[str]] = field(default_factory=dict)  # case id -> terms with a voxel in its label file
    # term -> dataset -> what its label of the term may hold that it labels nowhere apart (taxonomy may_include)
    may_include: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def merge(self, other: ExportReport) -> None:
        """Add what ``other`` (one case's report, from a worker) says."""
        self.cases.extend(other.cases)
        self.skipped.update(other.skipped)
        self.overlaps.update(other.overlaps)
        self.notes.extend(other.notes)
        self.images_only.extend(other.images_only)
        self.unknown.update(other.unknown)
        self.ignored.update(other.ignored)
        self.no_background.extend(other.no_background)
        self.resampled.extend(other.resampled)
        self.unlabelled.update(other.unlabelled)
        self.unknown_why.update(other.unknown_why)
        self.nonempty.update(other.nonempty)
        for term, by_dataset in other.may_include.items():
            for dataset, held in by_dataset.items():
                self.note_may_include(term, dataset, held)

    def note_may_include(self, term: str, dataset: str, held: Collection[str]) -> None:
        """Record that ``dataset``'s label of ``term`` may hold the ``held`` terms."""
        got = self.may_include.setdefault(term, {}).setdefault(dataset, [])
        got[:] = sorted({*got, *held})

    def rename(self, names: Mapping[str, str]) -> None:
        """Name the cases ``names`` maps (case id -> exported name) by their exported names."""
        self.cases = [names.get(c, c) for c in self.cases]
        self.images_only = [names.get(c, c) for c in self.images_only]
        self.skipped = {names.get(k, k): v for k, v in self.skipped.items()}
        self.overlaps = {names.get(k, k): v for k, v in self.overlaps.items()}
        self.unknown = {names.get(k, k): v for k, v in self.unknown.items()}
        self.ignored = {names.get(k, k): v for k, v in self.ignored.items()}
        self.no_background = [names.get(c, c) for c in self.no_background]
        self.unlabelled = {names.get(k, k): v for k, v in self.unlabelled.items()}
        self.unknown_why = {names.get(k, k): v for k, v in self.unknown_why.items()}
        self.nonempty = {names.get(k, k): v for k, v in self.nonempty.items()}

    def note_stand_ins(self, view: TrainingView, selected: Collection[str]) -> None:
        """Say which duplicate stood in for its group's kept member (it holds more of the terms,
        people's labels counted first), for the stand-ins among the ``selected`` case ids, and
        which was not used for its ingest warnings; called once the cases are written (before
        :meth:`rename`): one that was left out (a damaged store) is said to be, with its group."""
        exported = {*self.cases, *self.images_only}
        for cid, why in sorted(view.passed_over.items()):
            self.notes.append(f"the duplicate {cid} is not exported: {why}")
        for cid, why in sorted(view.caveats.items()):
            if cid in exported:
                self.notes.append(f"warning: {cid} is exported, but {why}")
        for kept, used in sorted(view.stand_ins.items()):
            if used not in selected:
                continue
            self.notes.append(
                f"{used} is exported for its duplicate group instead of the kept {kept}: it holds more of the "
                "requested terms, people's labels counted before pseudo labels (one member per group, as always)"
                if used in exported else
                f"{used} would stand in for the kept {kept} of its duplicate group (it holds more of the requested "
                f"terms), but it was left out itself (the skipped cases say why), so the group has no case in the "
                f"export (pass --with-duplicates to export {kept} too)")


def select_cases(release: Release, where: str, *, duplicates: bool = False, qc_filter: bool = True,
                 terms: Sequence[str] = (), layers: Sequence[str] = (), qc_filter_test: bool = False
                 ) -> tuple[list[ExportCase], TrainingView, list[tuple[ExportCase, str]]]:
    """``(cases, view, dropped)``: the cases ``where`` selects (SQL over ``preprocessed p`` and
    ``cases c``, and ``splits s`` when the release has one) without the duplicates the training
    view drops (one member per group, chosen among the cases selected:
    :func:`~curator.release.training.training_view`); that view; and the selected cases it drops,
    each with the member of its group used instead. ``qc_filter_test``: QC's exclusions apply
    to the test split's cases too (not by default: :func:`~curator.release.training.training_view`)."""
    names = release.table_names()
    if "preprocessed" not in names:
        raise ReleaseError("release_error", "the release has no preprocessed stores", path=str(release.path),
                           remedy="run the preprocess stage before `curator release`")
    has_splits = "splits" in names
    join = "left join splits s using (case_id, dataset, modality)" if has_splits else ""
    q = QUERY.format(split="s.split" if has_splits else "null", where=where, join=join)
    try:
        rows = release.sql(q).fetchall()
    except ReleaseError as e:
        raise where_error(e, where, "--where", has_splits) from e
    problem = None if rows else label_only_problem(release, where, join)
    if problem is not None:  # not "widen --where": the cases are there, their images are not
        raise problem
    view = training_view(release, duplicates=duplicates, qc_filter=qc_filter, terms=terms, layers=layers,
                         selected={r[0] for r in rows}, qc_filter_test=qc_filter_test)
    cases = [ExportCase(r[0], r[1], r[2], release.path / r[3], list(r[4] or []), r[5], r[6], r[7]) for r in rows]
    return ([c for c in cases if c.case_id not in view.dropped_duplicates], view,
            [(c, view.used_for.get(c.case_id, "")) for c in cases if c.case_id in view.dropped_duplicates])


def label_map(store: CaseStore | SourceCase, terms: list[str], chosen: Mapping[str, str],
              parts: Mapping[str, Sequence[str]] | None = None, *, ignore: int | None = None,
              anatomy: Mapping[str, Sequence[str]] | None = None,
              may_hold: Mapping[str, Collection[str]] | None = None) -> tuple[NDArray[np.integer[Any]], int, int]:
    """Codes 1..len(terms) in order (a later term wins where two overlap: an inner term over its
    container when the containers come first), the count of voxels two terms claim that are not
    part of one another and the count of voxels written as ``ignore``; term ``t`` is the union of its ``parts[t]``
    (default: itself), each from layer ``chosen[part]`` (background where it has none).

    A term with no parts (``parts[t]`` empty: the case's dataset does not annotate it) is unknown.
    With ``ignore`` (a code above every term's), each voxel whose true code an unknown term ``T``
    could change is written as ``ignore`` instead — those the written label map gives a lower code
    than ``T``'s (background, or an earlier term) unless ``T`` cannot be there: the voxel is outside
    a known requested term that ``T`` is part of (a liver tumour lies inside the liver), or it is
    labelled with a known term ``T`` neither contains nor is part of (requested terms are taken to
    be mutually exclusive unless one is part of the other). ``anatomy[t]``: ``t`` and the terms
    that are part of it (:func:`curator.release.training.with_parts`; default: ``t`` alone).
    ``may_hold[a]``: the terms a known term ``a``'s label may hold where the dataset does not
    label them (:meth:`curator.taxonomy.model.Taxonomy.may_hold`: a whole-organ kidney holds its
    tumours). An unknown ``T`` that known requested terms' labels may hold lies inside them: their
    voxels are ``ignore`` (whatever the codes' order: each may be ``T`` rather than the term) and
    the voxels outside them are not — a TotalSegmentator case's kidneys are unknown for a kidney
    tumour, its background stays background.
    Without ``ignore`` an unknown term is background, as if annotated absent."""
    use = {t: list(parts[t]) if parts is not None else [t] for t in terms}
    within = {t: set(anatomy[t]) if anatomy is not None and t in anatomy else {t} for t in terms}
    flat = list(dict.fromkeys(p for t in terms for p in use[t]))
    got = store.masks_from(chosen, flat)
    index = {p: i for i, p in enumerate(flat)}
    masks = np.stack([got[[index[p] for p in use[t]]].any(axis=0) if use[t] else np.zeros(got.shape[1:], bool)
                      for t in terms])
    top = len(terms) if ignore is None else max(len(terms), ignore)
    out = np.zeros(masks.shape[1:], dtype=np.uint8 if top <= np.iinfo(np.uint8).max else np.uint16)
    overlap = _overlap(masks, terms, within)
    for i in range(len(terms)):
        out[masks[i]] = i + 1
    if ignore is None or all(use[t] for t in terms):
        return out, overlap, 0
    if ignore <= len(terms):
        raise ValueError(f"the ignore code {ignore} must be above the terms' codes 1..{len(terms)}")
    unsure = np.zeros(out.shape, dtype=bool)
    for i, t in enumerate(terms):
        if use[t]:
            continue
        # known terms whose labels may hold T (the dataset's whole organ with its unlabelled masses)
        holders = [j for j, a in enumerate(terms) if use[a] and may_hold is not None and t in may_hold.get(a, ())]
        could = (out <= i) | np.isin(out, [j + 1 for j in holders])  # T (code i + 1) would win over background and earlier terms
        for j, a in enumerate(terms[:i]):  # an earlier known term T neither contains nor is part of
            if use[a] and a not in within[t] and t not in within[a] and j not in holders:
                could &= out != j + 1
        for j, a in enumerate(terms):  # T lies inside the known terms it is part of
            if use[a] and a != t and t in within[a]:
                could &= masks[j]
        if holders:  # ... and inside one of the labels that may hold it
            could &= masks[holders].any(axis=0)
        unsure |= could
    out[unsure] = ignore
    return out, overlap, int(unsure.sum())


def case_may_hold(tax: Taxonomy, terms: Sequence[str], annotated: Collection[str]) -> dict[str, frozenset[str]]:
    """Each term -> what its label may hold in a case whose dataset annotates ``annotated``
    (:meth:`~curator.taxonomy.model.Taxonomy.may_hold`) less the terms that dataset labels apart:
    a may-included term it annotates, or one of its parts, or a whole of it that does not hold the
    term itself (KiTS labels cysts apart from its kidney: its kidney holds no left cyst; a kidney
    and mass label holds the kidney too, so it separates nothing)."""
    out = {}
    for t in terms:
        own = {t, *tax.ancestors(t)}
        out[t] = frozenset(m for m in tax.may_hold(t)
                           if not any(x in annotated for x in (m, *tax.descendants(m)))
                           and not any(x in annotated and x not in own for x in tax.ancestors(m)))
    return out


def _overlap(masks: NDArray[np.bool_], terms: Sequence[str], within: Mapping[str, set[str]]) -> int:
    """Voxels claimed by two terms neither of which is part of the other (``within[t]``: ``t`` and
    its parts) — nested terms (nnU-Net regions, :mod:`curator.export.regions`) overlap by design."""
    clash = np.zeros(masks.shape[1:], dtype=bool)
    for i, a in enumerate(terms):
        for j in range(i + 1, len(terms)):
            if terms[j] not in within[a] and a not in within[terms[j]]:
                clash |= masks[i] & masks[j]
    return int(clash.sum())


def save_nifti(path: Path, array: NDArray[Any], geometry: Geometry) -> None:
    write_nifti(path, Volume(array, geometry))


def check_terms(held: Collection[str], terms: list[str], partial: bool) -> str | None:
    missing = [t for t in terms if t not in held]
    if missing and (not partial or len(missing) == len(terms)):
        return f"holds no {', '.join(missing)}"
    return None


def _open(case: ExportCase, release: Release, report: ExportReport, skip_as: str) -> CaseStore | None:
    """``case``'s store, its checksum checked; None when damaged (``report`` names ``skip_as``)."""
    try:
        return release.open_store(case.case_id)
    except ReleaseError as e:
        report.skipped[skip_as] = f"{e.detail} (`curator verify {release.path}` lists what changed)"
        report.notes.append(f"{case.case_id} was left out: {e.detail}; restore the release from an intact "
                            f"copy (`curator verify {release.path}` lists the files that changed)")
        log.warning("%s: %s; the case is left out of the export", e.path, e.detail)
        return None


def write_case(case: ExportCase, terms: list[str], partial: bool, image: Path, label: Path,
               report: ExportReport, layers: Sequence[str] = DEFAULT_LAYERS,
               view: TrainingView | None = None, release: Release | None = None,
               image_only: bool = False, ignore: int | None = None,
               channels: Sequence[tuple[ExportCase, Path]] = (), source: SourceReader | None = None,
               ) -> list[str] | None:
    """Write one case's image and label map; the terms it holds, or None (``report`` says why).
    A label ``view`` excludes (QC) counts as not held; ``release`` (when given) checks the store
    against its checksum first — a damaged store is skipped, named in ``report`` — and its
    taxonomy (the bundled one otherwise) says which parts make each term. With ``image_only``
    a case lacking terms still has its image written, without a label (``report.images_only``;
    returns ``[]``): a test image to run inference on, not a label claiming the terms absent.
    With ``partial`` a case's unknown terms (not annotated by its dataset; ``report.unknown``) are
    background, or with ``ignore`` mark the voxels they make unknown with that code
    (:func:`label_map`; ``report.ignored``).

    ``channels``: other cases (sequences of ``case``'s study) and where their images go, each
    placed on ``case``'s grid (:func:`curator.export.channels.onto`); the case is skipped when
    one of their stores is damaged (:mod:`curator.export.channels`).

    ``source``: write the case on its source grid, its image and labels read from its source
    files (:mod:`curator.export.on_source`), not the store's."""
    if release is not None:
        opened = [_open(c, release, report, case.case_id) for c in [case, *(c for c, _ in channels)]]
        stores = [s for s in opened if s is not None]
        if len(stores) < len(opened):  # a damaged store: _open said which
            return None
        store, others = stores[0], stores[1:]
        tax: Taxonomy = release.taxonomy
    else:
        from curator.taxonomy import load_taxonomy

        store, others, tax = CaseStore(case.store), [CaseStore(c.store) for c, _ in channels], load_taxonomy()
    try:  # a store of a release from elsewhere may declare any size: read whole below, it must fit
        check_memory(float(np.prod(store.image.shape, dtype=np.float64)) * (8 + len(terms) + 4 * len(channels)),
                     f"the store {tuple(store.image.shape)} of case {case.case_id}", str(store.path))
    except InputError as e:
        report.skipped[case.case_id] = e.detail
        log.warning("%s: %s; the case is left out of the export", e.path, e.detail)
        return None
    parts = {t: with_parts(tax, t) for t in terms}
    # a term the case does not hold itself is the union of its parts when they complete one of
    # its partitions (left + right kidney make the kidneys), as PatchDataset builds it
    held, use = terms_usable(case.case_id, store, parts, layers, view, tax)
    why = check_terms({t for t in terms if use[t]}, terms, partial)
    if why:  # in words true of the case: QC excluded the label, or another channel holds it
        why = lacking(case, store, [t for t in terms if not use[t]], parts, layers, view, tax,
                      [(c, s) for (c, _), s in zip(channels, others, strict=True)], release)
    if why and not image_only:
        report.skipped[case.case_id] = why
        return None
    on: CaseStore | SourceCase = store if source is None else source.read(case, store)  # the grid written
    save_nifti(image, on.physical_image(), on.geometry)
    for (other, path), got in zip(channels, others, strict=True):
        it: CaseStore | SourceCase = got if source is None else source.read(other, got)
        array, resampled = onto(it.physical_image, it.geometry, on.geometry, got.outside_value(other.modality))
        save_nifti(path, array, on.geometry)
        if resampled:
            report.resampled.append(other.case_id)
    if why:
        report.images_only.append(case.case_id)
        report.unlabelled[case.case_id] = why
        return []
    annotated = {*(store.terms("original") if "original" in store.layers() else ()),
                 *(view.labels_absent(case.case_id) if view is not None else ())}
    may_hold = case_may_hold(tax, terms, annotated)
    labels, overlap, ignored = label_map(on, terms, held, use, ignore=ignore, anatomy=parts, may_hold=may_hold)
    save_nifti(label, labels, on.geometry)
    if overlap:
        report.overlaps[case.case_id] = overlap
    for t in terms:  # a known term whose label may hold what the taxonomy's term leaves out
        if use[t] and may_hold[t]:  # the outermost such terms (kidney_mass, not also its tumour and cysts)
            report.note_may_include(t, case.dataset, [m for m in may_hold[t]
                                                      if not set(tax.ancestors(m, None)) & may_hold[t]])
    codes = set(np.flatnonzero(np.bincount(labels.ravel())).tolist())
    report.nonempty[case.case_id] = [t for t in terms if any(terms.index(a) + 1 in codes for a in terms
                                                             if a == t or a in parts[t])]
    unknown = [t for t in terms if not use[t]]
    if unknown:
        report.unknown[case.case_id] = unknown
        report.unknown_why[case.case_id] = unknown_reasons(case, store, unknown, parts, layers, view, tax, release)
    if ignored:
        report.ignored[case.case_id] = ignored
        if not (labels == 0).any():  # nothing of the case teaches background
            report.no_background.append(case.case_id)
    report.cases.append(case.case_id)
    return [t for t in terms if use[t]]


@dataclass(frozen=True)
class CaseJob:
    """One case of an export: where its image and label go; ``image_only``: see :func:`write_case`."""

    case: ExportCase
    image: Path
    label: Path
    image_only: bool = False
    channels: tuple[tuple[ExportCase, Path], ...] = ()  # other sequences of the study, on case's grid


@dataclass(frozen=True)
class _Shared:
    """What every case of one export shares (sent once to each worker)."""

    release: Path
    terms: list[str]
    partial: bool
    layers: tuple[str, ...]
    ignore: int | None
    workers: int = 1  # processes writing cases at once: each allows 1/(4 × workers) of the memory
    source: SourceReader | None = None  # the source grid's files (--grid source)


_WORKER: dict[str, Any] = {}


def _start_worker(shared: _Shared) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the main process, which stops the pool
    WORKERS.set(shared.workers)  # check_memory's share: this worker is one of shared.workers
    _WORKER.update(shared=shared, release=Release(shared.release))


def _write_job(job: CaseJob, view: TrainingView) -> tuple[list[str] | None, ExportReport]:
    shared: _Shared = _WORKER["shared"]
    report = ExportReport(job.image.parent)
    present = write_case(job.case, shared.terms, shared.partial, job.image, job.label, report, shared.layers, view,
                         _WORKER["release"], image_only=job.image_only, ignore=shared.ignore, channels=job.channels,
                         source=shared.source)
    return present, report


def write_cases(release: Release, jobs: Sequence[CaseJob], terms: list[str], partial: bool, report: ExportReport,
                layers: Sequence[str], view: TrainingView, *, ignore: int | None = None,
                workers: int = 1, source: SourceReader | None = None) -> list[list[str] | None]:
    """:func:`write_case` for every job, in order (what each returned). With ``workers`` > 1 the
    cases are written by that many processes, each reading and gzipping one case at a time; their
    reports are merged in job order, so the export is the same whatever the number of workers.
    The workers are spawned: a script calling this with ``workers`` > 1 needs the usual
    ``if __name__ == "__main__":`` guard."""
    if workers <= 1 or len(jobs) <= 1:
        return [write_case(j.case, terms, partial, j.image, j.label, report, layers, view, release,
                           image_only=j.image_only, ignore=ignore, channels=j.channels, source=source) for j in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    shared = _Shared(release.path, list(terms), partial, tuple(layers), ignore, min(workers, len(jobs)), source)
    ids = [[j.case.case_id, *(c.case_id for c, _ in j.channels)] for j in jobs]  # the channels' too (reasons)
    views = [TrainingView(excluded={c: view.labels_excluded(c) for c in cs},
                          absent={c: view.labels_absent(c) for c in cs}) for cs in ids]
    out: list[list[str] | None] = []
    pool = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(shared,))
    try:
        for present, sub in pool.map(_write_job, jobs, views):
            report.merge(sub)
            out.append(present)
    except BrokenProcessPool as e:  # a worker killed (out of memory, a signal): no case can tell which
        pool.shutdown(wait=True, cancel_futures=True)
        nxt = jobs[len(out)].case.case_id
        raise ReleaseError("worker_crashed", f"an export worker died while {min(workers, len(jobs))} cases were "
                           f"being written (the next case in order: {nxt}); nothing was exported",
                           path=str(release.path), remedy="run the export again with fewer --workers (each holds "
                           "a case's image and label in memory), or --workers 1") from e
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # the running cases end before staging is removed
        raise
    pool.shutdown()
    return out
