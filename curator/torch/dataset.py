"""``PatchDataset``: random patches + binary term masks + text prompts from a release.

Map-style and deterministic: item ``i`` of epoch ``e`` is drawn from a generator seeded
with ``(seed, e, i)``, so any worker, any rank (``DistributedSampler`` splits indices)
and any re-run draws the same patch. Call :meth:`PatchDataset.set_epoch` each epoch.
Stores are opened lazily in each process (never shared across a fork); the dataset pickles
(spawn / forkserver workers), and the epoch lives in shared memory, so ``set_epoch`` reaches
workers kept alive between epochs (``persistent_workers=True``).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import multiprocessing
import multiprocessing.context
import os
import warnings
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from curator.errors import CuratorError, ReleaseError, kind_note
from curator.preprocess.intensity import normalise
from curator.release.query import Release
from curator.release.query_errors import where_error
from curator.release.studies import label_on_other_channel
from curator.release.training import (
    check_request,
    held_elsewhere,
    held_terms,
    label_only_problem,
    layer_advice,
    term_parts,
    training_view,
    usable_parts,
    usable_terms,
    with_parts,
)
from curator.store import LAYERS, CaseStore
from curator.store_reader import Box
from curator.torch.channels import GRIDS_APART, studies
from curator.torch.sampling import case_weights as balanced_weights
from curator.torch.sampling import item_rng, patch_start, repeat_factor

log = logging.getLogger("curator")

# case_id, dataset and modality mean the same in both tables: USING makes them plain names
QUERY = """select case_id, dataset, modality, p.store, p.shape{channels}
from preprocessed p join cases c using (case_id, dataset, modality) {join} where p.has_image and ({where}){splits}
order by case_id"""


class PatchDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Random patches from the cases of ``release`` selected by the SQL ``where`` clause (over
    ``cases c`` and ``preprocessed p``, and ``splits s`` when the release has one, as the
    exports' ``--where``).

    Each item is a dict: ``image`` float32 ``(1, *patch)`` (normalised per modality; with
    ``normalise=False`` in physical units, HU for CT), ``masks`` uint8 ``(T, *patch)`` for the
    requested ``terms`` (a term the case does not hold itself is the union of its parts, when
    they complete one of its partitions: a liver tumour alone is no liver), ``present`` bool
    ``(T,)`` (the case holds the term), ``layers`` (per term the label layer its mask was read
    from — ``"original"``, ``"revised"`` or ``"pseudo"``, ``""`` where not present; of a term made
    of parts read from several layers, the least reviewed: to weigh pseudo labels lower in a
    loss), ``prompts`` (``"(ct) liver"``), ``case_id`` and ``start`` (patch origin). PyTorch's
    default collate turns the per-term lists ``prompts`` and ``layers`` into T tuples of B
    (``batch["prompts"][t][b]``); :func:`curator.torch.pad_collate` keeps them B lists of T. A term the case's dataset annotates but the case lacks (no spleen
    in this scan) is present with an empty mask; a term it does not annotate is not present.
    Where a patch reaches past the volume, the image is filled with what air or background is
    (normalised: the lower bound of the case's intensity window, the value air takes;
    ``normalise=False``: −1000 HU for CT, 0 for MR and PET — the window's lower bound if that is
    negative; :meth:`curator.store.CaseStore.outside_value`) and the masks with background.

    Cases that hold none of the requested terms (no voxel, no annotated absence) are left out:
    their items would have ``present`` all false (``labelled_only=False`` keeps them); a log
    line at info level counts them and ``unlabelled`` lists their case ids.

    Cases are drawn with SAT's weights (``balance``: 1/√N per dataset; ``repeat``: the repeat
    factor of the annotated region), times ``case_weights`` when given: a mapping case_id ->
    weight (a case it does not name weighs 1), or a function of a case (a dict with ``case_id``,
    ``dataset``, ``modality`` and ``terms``, the requested terms the case holds) returning its
    weight — e.g. ``lambda c: 5.0 if "kidney_tumor" in c["terms"] else 1.0`` draws the cases with
    a tumour five times as often. It is called once, here (spawned workers need not pickle it).
    ``weights`` lists the resulting probabilities (read-only: each worker draws from them).

    ``split`` picks the release's ``splits`` (default ``"train"``: validation and test cases
    stay out unless asked for; ``None`` takes every case the ``where`` clause selects).

    ``layers`` says where labels come from, per term: the first of them that holds the term
    (default: the dataset's own ``original`` annotation, then ``revised`` — reviewed pseudo
    labels; add ``"pseudo"`` to train on pseudo labels too).

    By default it reads the release's *training view* (:mod:`curator.release.training`):
    duplicates the keep policy dropped are left out (``duplicates=True`` keeps them) and labels
    QC excluded count as not annotated (``qc_filter=False`` uses them) — a derived term loses
    its mask in a case where one of its parts was excluded. In cases of the release's ``test``
    split QC's exclusions are not applied unless ``qc_filter_test=True`` (as the exports'
    ``--qc-filter-test``): leaving out the test labels QC flagged would shrink the test set
    towards easy cases; ``view.test_flagged`` lists the ones used. Unknown term ids, a term given
    twice and unknown layers are refused; a term no case of the release holds in ``layers``, or
    no case of the selection (``where``, ``split``), is warned of (its masks would be empty).

    Each store is checked against the content hash ``release.json`` records before its first
    read in a process (a cache under ``$CURATOR_CACHE_DIR`` remembers stores found intact while
    their files keep their size, times and inode), and each location file against its checksum:
    a chunk damaged on disk raises a ``release_corrupt`` error naming the case instead of
    decoding into other voxels. The first read of a store costs one read of its files;
    ``verify=False`` skips the check (e.g. right after ``curator verify``).

    Each process keeps the ``max_open`` stores and location files it used last; a store's
    metadata is read from its ``zarr.json`` files, so reopening one costs a few file reads.
    The shard files read stay open (a file descriptor each) up to a quarter of the process's
    ``ulimit -n`` whatever ``max_open`` and the release size
    (:func:`curator.store_reader.open_shard_limit`), so workers train under a limit of 256.

    ``channels=["t1n", "t1c", "t2w", "t2f"]`` stacks a multi-sequence study's sequences (one case
    each, linked by ``study_key``) as the channels of ``image`` ``(C, *patch)``: the selected cases
    are grouped by study, a study is an item when it has one selected case of each sequence. The
    first sequence's case is the reference — its grid, masks, ``present``, prompts, sampling
    weight and foreground, and ``case_id`` — and each other channel is read from its own store at
    the same physical position (each store is cropped to its own body: its grid is the
    reference's shifted by whole voxels), normalised with its own parameters and filled as above
    where its store does not reach; ``channel_ids`` lists the channels' case ids. Studies lacking
    a sequence, or whose grids are not whole-voxel shifts of each other (another spacing or
    direction, or a fraction of a voxel apart: not resampled), are left out with a warning
    (``left_out``: study -> why).

    ``transform`` is called on each item dict and its result returned — augmentation, e.g. a MONAI
    ``Compose`` of dictionary transforms over ``keys=["image", "masks"]`` (``mode`` nearest for
    ``masks``). A transform with ``set_random_state`` (MONAI's ``Randomizable``, ``Compose``) is
    seeded from the item's own generator before each call, so item ``i`` of epoch ``e`` is
    augmented the same way in any worker or re-run, as its patch is drawn; other callables draw
    from their own randomness. It runs in the worker: spawned workers need it to pickle (no
    lambda).
    """

    def __init__(self, release: str | Path | Release, *, terms: Sequence[str], where: str = "true",
                 split: str | Sequence[str] | None = "train",
                 patch_size: Sequence[int] = (96, 96, 32), layers: Sequence[str] = ("original", "revised"),
                 foreground_fraction: float = 0.67, term_weights: dict[str, float] | None = None,
                 balance: bool = True, repeat: bool = True, samples_per_epoch: int | None = None,
                 seed: int = 0, normalise: bool = True, max_open: int = 64, duplicates: bool = False,
                 qc_filter: bool = True, labelled_only: bool = True, verify: bool = True,
                 channels: Sequence[str] | None = None, qc_filter_test: bool = False,
                 transform: Callable[[dict[str, Any]], Any] | None = None,
                 case_weights: Mapping[str, float] | Callable[[dict[str, Any]], float] | None = None) -> None:
        self.release = release if isinstance(release, Release) else Release(release)
        self.root = self.release.path
        self.terms = _names("terms", terms)
        self.patch = _patch(patch_size)
        self.layers = tuple(_names("layers", layers))
        self.fg = float(foreground_fraction)
        self.term_weights = dict(term_weights or {})
        bad = {t: w for t, w in self.term_weights.items()
               if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating))
               or not math.isfinite(w) or w < 0}
        if bad:
            raise ReleaseError("release_error", f"term_weights {bad}: give each term a finite number >= 0 (its "
                               "share of foreground patches relative to the others; 0 never centres on it)")
        self._epoch: Any = multiprocessing.RawValue("q", 0)  # shared with forked and spawned workers
        if isinstance(max_open, bool) or not isinstance(max_open, (int, np.integer)) or max_open < 1:
            raise ReleaseError("release_error", f"max_open = {max_open!r}: give a whole number >= 1 (the stores and "
                               "location files each process keeps open; 0 would reopen and re-read one per item)")
        self.seed, self.normalise, self.max_open, self.verify = seed, normalise, int(max_open), bool(verify)
        if transform is not None and not callable(transform):
            raise ReleaseError("release_error", f"transform = {transform!r} is not callable: give a function of "
                               "the item dict, e.g. a MONAI Compose of dictionary transforms")
        self.transform = transform
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ReleaseError("release_error", f"seed = {seed!r}: give a whole number >= 0")
        if not self.terms or not 0.0 <= self.fg <= 1.0:
            raise ReleaseError("release_error", "PatchDataset needs at least one term and a foreground_fraction "
                               f"in [0, 1] (got {self.fg})")
        unknown = sorted(set(self.term_weights) - set(self.terms))
        if unknown:
            raise ReleaseError("release_error", f"term_weights names {unknown}, which are not among the terms "
                               f"{self.terms}")
        if samples_per_epoch is not None and (isinstance(samples_per_epoch, bool) or not isinstance(
                samples_per_epoch, (int, np.integer)) or samples_per_epoch < 1):
            raise ReleaseError("release_error", f"samples_per_epoch = {samples_per_epoch!r}: give a positive whole "
                               "number, or None for one item per case")
        names = self.release.table_names()
        splits = "" if split is None else self._split_filter(split, names)
        if "preprocessed" not in names or "store_terms" not in names:
            raise ReleaseError("release_error", "the release has no preprocessed stores", path=str(self.root),
                               remedy="run the preprocess stage before `curator release`")
        # warned once the dataset is made: a request it refuses below is not warned of first
        unheld = check_request(self.release, self.terms, self.layers, unheld="warn", warn=False)
        join = "left join splits s using (case_id, dataset, modality)" if "splits" in names else ""
        self.channels = None if channels is None else _names("channels", channels)
        extra = "" if self.channels is None else ", c.sequence, c.study_key, p.affine"
        try:
            matched = self.release.sql(QUERY.format(where=where, splits=splits, join=join, channels=extra)).fetchall()
        except ReleaseError as e:
            raise where_error(e, where, "where", bool(join)) from e
        # one member per duplicate group, chosen among the cases `where` selects
        self.view = training_view(self.release, duplicates=duplicates, qc_filter=qc_filter, terms=self.terms,
                                  layers=self.layers, selected={c[0] for c in matched},
                                  qc_filter_test=qc_filter_test)
        cases = [c for c in matched if c[0] not in self.view.dropped_duplicates]
        problem = None if matched else label_only_problem(self.release, where, join, splits)
        if problem is not None:  # not "widen the where clause": the cases are there, their images are not
            raise problem
        if not cases:  # a duplicate group is used through a member the selection holds: never empty by dedup
            raise ReleaseError("release_error", f"no preprocessed case matches WHERE {where}", path=str(self.root),
                               remedy="widen the where clause")
        self.cases = [{"case_id": c[0], "dataset": c[1], "modality": c[2], "store": c[3], "shape": list(c[4])}
                      for c in cases]
        selected = {c["case_id"] for c in self.cases}
        for keeper, used in sorted(self.view.stand_ins.items()):  # of the cases selected, not of the release
            if used in selected:
                log.info("PatchDataset: %s stands in for its duplicate %s (it holds more of the terms, people's "
                         "labels counted before pseudo labels)", used, keeper)
        for cid, why in sorted(self.view.passed_over.items()):
            log.info("PatchDataset: the duplicate %s is not used: %s", cid, why)
        for cid, why in sorted(self.view.caveats.items()):
            if cid in selected:
                log.warning("PatchDataset: %s is used, but %s", cid, why)
        self.left_out: dict[str, str] = {}  # with channels: study (study_name: its case id without the sequence) -> why it is not used
        if self.channels is not None:
            gone = [{"case_id": c[0], "sequence": c[5], "study_key": c[6], "used": self.view.used_for.get(c[0], "")}
                    for c in matched if c[0] in self.view.dropped_duplicates]
            self._studies([{**case, "sequence": c[5], "study_key": c[6], "affine": list(c[7])}
                           for case, c in zip(self.cases, cases, strict=True)], where, self.channels, gone)
        tax = self.release.taxonomy  # the release's own (a custom taxonomy's terms and parts)
        self._parts = {t: with_parts(tax, t) for t in self.terms}
        self._prompts = {m: [tax.prompt(t, m) if t in tax else f"({m.lower()}) {t.replace('_', ' ')}"
                             for t in self.terms] for m in {c["modality"] for c in self.cases}}
        self._index_terms()
        # labelled_only: the selected cases left out for holding none of the terms (case ids)
        self.unlabelled: list[str] = []
        if labelled_only:  # a case holding none of the terms gives items with nothing to learn from
            kept = [c for c in self.cases if self._usable.get(c["case_id"])]
            self.unlabelled = sorted(c["case_id"] for c in self.cases if not self._usable.get(c["case_id"]))
            if self.unlabelled and kept:
                log.info("PatchDataset: %d of %d selected case(s) hold none of %s in layers %s and are left out "
                         "(labelled_only=False keeps them; `unlabelled` lists them): %s%s", len(self.unlabelled),
                         len(self.cases), self.terms, list(self.layers), ", ".join(self.unlabelled[:10]),
                         " ..." if len(self.unlabelled) > 10 else "")
            if not kept:
                elsewhere, _ = held_elsewhere(self.release, selected, self.terms, self.layers, self.view)
                noun = "case" if len(selected) == 1 else "cases"
                on_other = self._label_on_other_channel()
                raise ReleaseError("release_error", f"no selected case holds any of {self.terms} in layers "
                                   f"{list(self.layers)}", path=str(self.root),
                                   remedy=on_other or
                                   (layer_advice(elsewhere, len(selected), noun, self.layers, "layers=({})")
                                    if elsewhere else "check the terms and layers, or pass labelled_only=False"))
            self.cases = kept
        for note in [*unheld.values(), *self._unheld_in_selection(skip=unheld)]:
            warnings.warn(note, UserWarning, stacklevel=2)
        reps = [self._repeat(c) if repeat else 1.0 for c in self.cases]
        weights = np.asarray(balanced_weights([c["dataset"] for c in self.cases], reps, balance))
        if case_weights is not None:
            weights = weights * self._given_weights(case_weights)
            weights /= weights.sum()
        weights.flags.writeable = False
        self._weights = weights
        self._cdf = np.cumsum(weights)
        self.length = int(samples_per_epoch or len(self.cases))
        self._stores: collections.OrderedDict[str, CaseStore] = collections.OrderedDict()
        # location file -> the sampled voxels of the (layer/part) keys this dataset draws from, at
        # most max_open files (like the stores): a worker that kept every case's file it had
        # read grew by every location array of the release (all terms, all layers) over epochs
        self._locs: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._pid = os.getpid()

    def _unheld_in_selection(self, skip: Collection[str]) -> list[str]:
        """Warnings for requested terms no selected case holds (outside ``skip``: terms the release
        as a whole lacks, warned of already): a ``where`` or ``split`` that leaves out every case
        with a kidney tumour gives all-background masks as surely as a release without one."""
        ids = [c["case_id"] for c in self.cases]
        n, noun = len(ids), "case" if len(ids) == 1 else "cases"
        missing = [t for t in self.terms if t not in skip and not any(t in self._held.get(c, ()) for c in ids)]
        elsewhere = held_elsewhere(self.release, ids, missing, self.layers, self.view)[0] if missing else {}
        notes = []
        for t in self.terms:
            if t in missing:
                other = {k: v for k, v in elsewhere.items() if k[0] == t}
                problem = ReleaseError(
                    "release_error", f"no selected case holds {t!r} in layers {list(self.layers)} ({n} {noun} "
                    "selected; the release's other cases do)", path=str(self.root),
                    remedy=layer_advice(other, n, noun, self.layers, "layers=({})") if other else
                    "widen where or split to cases that hold it, or leave the term out")
                notes.append(f"{problem} (its masks will be empty)")
            elif t not in skip and not any(t in self._foreground.get(c, {}) for c in ids):
                k = sum(t in self._held.get(c, ()) for c in ids)
                notes.append(f"no selected case has a voxel of {t!r}; {k} of the {n} selected {noun} "
                             f"{'annotates' if k == 1 else 'annotate'} it as absent (their masks are empty)")
        return notes

    @property
    def weights(self) -> NDArray[np.float64]:
        """Each case's probability of being drawn, in the order of ``cases`` (sums to 1): SAT's
        dataset balancing × repeat factor × ``case_weights``. Read-only — the items are drawn from
        it in every worker, so give ``case_weights=`` when making the dataset instead."""
        return self._weights

    @weights.setter
    def weights(self, value: Any) -> None:
        raise AttributeError("PatchDataset.weights is read-only (workers draw cases from the weights the dataset "
                             "was made with): pass case_weights={case_id: weight} or case_weights=function of the "
                             "case when making it")

    def _given_weights(self, given: Mapping[str, float] | Callable[[dict[str, Any]], float]) -> NDArray[np.float64]:
        """``case_weights`` as one factor per case of ``cases``: a mapping's value (1 for a case it
        does not name), or the function's value on ``{case_id, dataset, modality, terms}`` (``terms``:
        the requested terms the case holds)."""
        if isinstance(given, Mapping):
            known = {cid for (cid,) in self.release.sql("select case_id from cases").fetchall()}
            unknown = sorted(str(k) for k in given if k not in known)
            if unknown:
                raise ReleaseError("release_error", f"case_weights names case ids the release does not hold: "
                                   f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''}", path=str(self.root),
                                   remedy="give the release's case ids (`select case_id from cases`)")
            values = [given.get(c["case_id"], 1.0) for c in self.cases]
        elif callable(given):
            values = [given({"case_id": c["case_id"], "dataset": c["dataset"], "modality": c["modality"],
                             "terms": list(self._held.get(c["case_id"], ()))}) for c in self.cases]
        else:
            raise ReleaseError("release_error", f"case_weights = {given!r}: give a mapping case_id -> weight, or a "
                               "function of the case (a dict with case_id, dataset, modality, terms) returning one")
        bad = {c["case_id"]: w for c, w in zip(self.cases, values, strict=True)
               if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating))
               or not math.isfinite(w) or w < 0}
        if bad:
            shown = dict(list(bad.items())[:5])
            raise ReleaseError("release_error", f"case_weights {shown}: give each case a finite number >= 0 (a "
                               "factor on its chance of being drawn; 0 never draws it)")
        out = np.asarray(values, dtype=np.float64)
        if not out.sum() > 0:
            raise ReleaseError("release_error", f"case_weights give every one of the {len(out)} selected case(s) "
                               "weight 0: no case could be drawn", remedy="give some selected case a weight > 0")
        return out

    def _studies(self, cases: list[dict[str, Any]], where: str, channels: list[str],
                 dropped: list[dict[str, Any]]) -> None:
        """Items become studies: ``self.cases`` the reference cases (the first of ``channels``), each
        with its other channels' cases and their voxel shifts (:func:`curator.torch.channels.studies`)."""
        refs, self.left_out = studies(cases, channels, dropped)
        if self.left_out:
            log.warning("PatchDataset: %d stud%s left out of channels %s: %s", len(self.left_out),
                        "y" if len(self.left_out) == 1 else "ies", channels,
                        "; ".join(f"{k}: {v}" for k, v in sorted(self.left_out.items())[:10])
                        + (" ..." if len(self.left_out) > 10 else ""))
        if not refs:  # the studies whose grids do not line up first: cases lacking a sequence do not hide them
            apart = sorted(k for k, v in self.left_out.items() if GRIDS_APART in v)
            rest = sorted(k for k in self.left_out if k not in apart)
            why = "; ".join(f"{k}: {self.left_out[k]}" for k in [*apart, *rest][:3])
            check = "check channels, where and split against the cases' sequence and study_key"
            raise ReleaseError("release_error", f"no study WHERE {where} has a case of each of {channels}"
                               + (f" ({len(self.left_out)} left out: {why})" if why else ""), path=str(self.root),
                               remedy=(f"{'the studies hold' if not rest else f'{len(apart)} of them hold'} every "
                                       "channel but their grids do not line up (above): export them (curator export "
                                       "nnunet/monai --channels resample linearly)"
                                       + (f"; for the other {len(rest)}, {check}" if rest else "")) if apart else check)
        for k, seq in enumerate(channels):  # one meaning per channel, as the exports require
            mods = sorted({(ref if k == 0 else ref["channels"][k - 1])["modality"] for ref in refs})
            if len(mods) > 1:
                raise ReleaseError("release_error", f"channel {k} ({seq}) mixes modalities {mods} across the selected "
                                   "studies: a network would read one input channel as two kinds of image",
                                   path=str(self.root), remedy="narrow where (e.g. to one dataset)")
        for c in (c for ref in refs for c in [ref, *ref["channels"]]):
            for key in ("sequence", "study_key", "affine"):
                c.pop(key)
        self.cases = refs

    def _label_on_other_channel(self) -> str | None:
        """With ``channels``, when no study's first channel holds a term: which other sequence's
        cases do (a flair whose own label ingest rejected beside the t1 holding the shared seg),
        said as the nnU-Net export says it — to list that sequence first, not labelled_only=False
        (items without labels); None when no other channel holds one either."""
        if self.channels is None:
            return None
        others = {c["case_id"]: seq for ref in self.cases for seq, c in zip(self.channels[1:], ref["channels"],
                                                                           strict=True)}
        held = held_terms(self.release, others, self.terms, self.layers, self.view)
        holders = sorted({others[c] for c, ts in held.items() if ts}, key=self.channels.index)
        if not holders:
            return None
        terms = [t for t in self.terms if any(t in ts for ts in held.values())]
        studies = sum(any(held.get(c["case_id"]) for c in ref["channels"]) for ref in self.cases)
        return label_on_other_channel(self.channels[0], terms, holders, used="read", option="channels=",
                                      studies=studies)

    def _split_filter(self, split: str | Sequence[str], names: list[str]) -> str:
        wanted = _names("split", split) if not isinstance(split, str) else [split]
        bad = sorted(set(wanted) - {"train", "val", "test"})
        if bad or not wanted:
            raise ReleaseError("release_error", f"split {bad or wanted}: give train, val and/or test (or None)")
        if "splits" not in names:
            raise ReleaseError("release_error", "the release has no splits table (stages.splits is disabled), "
                               f"so split={split!r} cannot be honoured", path=str(self.root),
                               remedy="pass split=None to take every case the where clause selects")
        listed = ", ".join(f"'{x}'" for x in wanted)
        return f" and case_id in (select case_id from splits where split in ({listed}))"

    # -- pickling and epochs ----------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """Open stores and loaded locations stay behind; the shared epoch goes along only to a
        worker being started (elsewhere a plain copy of its value)."""
        state = dict(self.__dict__)
        state["_stores"], state["_locs"] = collections.OrderedDict(), collections.OrderedDict()
        if multiprocessing.context.get_spawning_popen() is None:
            state["_epoch"] = self.epoch
        return state

    @property
    def epoch(self) -> int:
        return self._epoch if isinstance(self._epoch, int) else int(self._epoch.value)

    # -- bookkeeping ----------------------------------------------------------------------
    def _index_terms(self) -> None:
        rows = self.release.sql("select case_id, term_id, layer, voxels, bbox_start, bbox_stop, locations "
                                "from store_terms").fetchall()
        wanted = {p for parts in self._parts.values() for p in parts}
        by_case: dict[str, dict[str, dict[str, Any]]] = {}
        # SAT's repeat factor: the box around the case's annotated foreground and the number of
        # annotated classes — of the layers this dataset trains on, labels QC excluded left out,
        # each term once (a pseudo layer's terms or a term in two layers are no more annotation)
        self._roi: dict[str, tuple[list[int], list[int], set[str]]] = {}
        held_by: dict[str, dict[str, set[str]]] = {}  # case -> layer -> the terms its store holds there
        for cid, term, layer, vox, b0, b1, loc in rows:
            held_by.setdefault(cid, {}).setdefault(layer, set()).add(term)
            if (term, layer) in self.view.labels_excluded(cid):
                continue
            if layer in self.layers and vox:
                roi = self._roi.get(cid)
                self._roi[cid] = ((list(b0), list(b1), {term}) if roi is None else
                                  ([min(a, b) for a, b in zip(roi[0], b0, strict=True)],
                                   [max(a, b) for a, b in zip(roi[1], b1, strict=True)], roi[2] | {term}))
            if term in wanted:
                by_case.setdefault(cid, {}).setdefault(term, {})[layer] = {"voxels": vox, "locations": loc}
        self._usable: dict[str, dict[str, str]] = {}  # case -> part -> the layer it is read from
        self._held: dict[str, tuple[str, ...]] = {}  # case -> the requested terms it holds
        # case -> requested term -> the (part, layer, store_terms row) its foreground voxels are drawn from
        self._foreground: dict[str, dict[str, list[tuple[str, str, dict[str, Any]]]]] = {}
        for cid in sorted({c["case_id"] for c in self.cases}):  # the rule each item applies (usable_terms)
            usable = usable_parts(held_by.get(cid, {}), self._parts, self.layers, self.view.labels_excluded(cid),
                                  self.view.labels_absent(cid))
            used = {t: term_parts(t, parts, usable, self.release.taxonomy) for t, parts in self._parts.items()}
            keep = {p for parts in used.values() for p in parts}
            if keep:
                self._usable[cid] = {p: usable[p] for p in keep}
            self._held[cid] = tuple(t for t in self.terms if used[t])
            # foreground only of requested terms the case holds whole, each from its own voxels when
            # it holds them itself, else from the parts that make it up (from the layer each is read from)
            terms = by_case.get(cid, {})
            sampled = {}
            for t in self.terms:
                parts = (t,) if t in used[t] else used[t]
                found = [(p, usable[p], terms[p][usable[p]]) for p in parts
                         if usable[p] in terms.get(p, {}) and terms[p][usable[p]]["voxels"]]
                if found:
                    sampled[t] = found
            self._foreground[cid] = sampled

    def _repeat(self, case: dict[str, Any]) -> float:
        roi = self._roi.get(case["case_id"])
        if roi is None:
            return 1.0
        return repeat_factor(int(np.prod(np.subtract(roi[1], roi[0]))), len(roi[2]))

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next items are drawn for (seen by every worker, persistent or not)."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ReleaseError("release_error", f"set_epoch({epoch!r}): give a whole number >= 0")
        if isinstance(self._epoch, int):
            self._epoch = int(epoch)
        else:
            self._epoch.value = int(epoch)

    def __len__(self) -> int:
        return self.length

    def _store(self, case: dict[str, Any]) -> CaseStore:
        if self._pid != os.getpid():
            self._stores, self._locs, self._pid = collections.OrderedDict(), collections.OrderedDict(), os.getpid()
        cid = case["case_id"]
        s = self._stores.pop(cid, None) or (self.release.open_store(cid) if self.verify
                                            else CaseStore(self.root / case["store"]))
        self._stores[cid] = s
        while len(self._stores) > self.max_open:
            self._stores.popitem(last=False)
        return s

    def _location(self, rng: np.random.Generator, case: dict[str, Any]) -> NDArray[np.int64] | None:
        """A voxel of one requested term the case holds: the term drawn by ``term_weights`` (1 each
        by default, whatever the number of parts it is made of), then a voxel uniformly over it
        (a part drawn in proportion to its voxels when the term is the union of its parts)."""
        held = self._foreground.get(case["case_id"], {})
        if not held:
            return None
        terms = sorted(held)
        w = np.asarray([self.term_weights.get(t, 1.0) for t in terms], dtype=np.float64)
        if w.sum() <= 0:
            return None
        found = held[terms[int(rng.choice(len(terms), p=w / w.sum()))]]
        voxels = np.asarray([float(info["voxels"]) for _, _, info in found])
        term, layer, info = found[int(rng.choice(len(found), p=voxels / voxels.sum()))] if len(found) > 1 else found[0]
        path = info["locations"]
        pts = self._points(path, case["case_id"]).get(f"{layer}/{term}")
        if pts is None or not len(pts):
            raise self.release.corrupt(f"{path} holds no voxel positions of {term} ({layer}), which store_terms "
                                       f"says case {case['case_id']} holds", self.root / path, case["case_id"])
        return np.asarray(pts[int(rng.integers(len(pts)))], dtype=np.int64)

    def _points(self, path: str, case_id: str) -> dict[str, Any]:
        """The arrays of location file ``path`` this dataset draws from (the requested terms'
        parts, in the layers they are read from), from a cache of the ``max_open`` last used."""
        pts = self._locs.pop(path, None)
        if pts is None:
            keys = {f"{layer}/{part}" for found in self._foreground.get(case_id, {}).values()
                    for part, layer, _ in found}
            pts = self.release.load_npz(path, case_id, keys=keys)
        self._locs[path] = pts
        while len(self._locs) > self.max_open:
            self._locs.popitem(last=False)
        return pts

    # -- items ----------------------------------------------------------------------------
    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not -self.length <= index < self.length:  # `for item in ds` stops here; no endless sampling
            raise IndexError(f"patch index {index} out of range for {self.length} samples per epoch")
        with worker_errors():
            rng = item_rng(self.seed, self.epoch, index % self.length)
            case = self.cases[min(int(np.searchsorted(self._cdf, rng.random() * self._cdf[-1], "right")),
                                  len(self.cases) - 1)]
            shape = tuple(case["shape"])
            centre = self._location(rng, case) if rng.random() < self.fg else None
            start = patch_start(rng, shape, self.patch, centre)
            return self._transformed(self._item(case, start, self.patch), rng)

    def _transformed(self, item: dict[str, Any], rng: np.random.Generator) -> Any:
        if self.transform is None:
            return item
        seed = int(rng.integers(0, 2**32))  # drawn last: the patch is the same with or without a transform
        if hasattr(self.transform, "set_random_state"):  # MONAI Randomizable / Compose: the same draws for item i
            self.transform.set_random_state(seed=seed)
        return self.transform(item)

    def _item(self, case: dict[str, Any], start: Sequence[int], patch: tuple[int, int, int]) -> dict[str, Any]:
        """The item of ``case`` for the box of size ``patch`` at ``start`` (voxels of its store)."""
        store = self._store(case)
        box, pad = _window(start, patch, tuple(case["shape"]))
        chans = case.get("channels", ())
        image = np.empty((1 + len(chans), *patch), dtype=np.float32)
        self._image(image[0], store, case["modality"], box, pad)
        for k, ch in enumerate(chans, 1):  # the same physical position in each channel's store
            self._image(image[k], self._store(ch), ch["modality"],
                        *_window([s + t for s, t in zip(start, ch["shift"], strict=True)], patch, ch["shape"]))
        masks: NDArray[np.uint8] | None = None
        present = np.zeros(len(self.terms), dtype=bool)
        held = usable_terms(store, self._parts, self.layers, self.view.labels_excluded(case["case_id"]),
                            self.view.labels_absent(case["case_id"]))
        if held:
            use = [term_parts(t, self._parts[t], held, self.release.taxonomy) for t in self.terms]
            flat = [p for ps in use for p in ps]
            got = store.masks_from(held, flat, box) if flat else None
            if flat == self.terms and got is not None and got.shape[1:] == patch:  # one mask per term, no padding: no copy
                masks = got.view(np.uint8)
                present[:] = True
        if masks is None:
            masks = np.zeros((len(self.terms), *patch), dtype=np.uint8)
        if held and not present.all():
            k = 0
            for i, ps in enumerate(use):
                n = len(ps)
                present[i] = n > 0
                if n and got is not None:
                    masks[i][pad] = got[k] if n == 1 else got[k:k + n].any(axis=0)
                k += n
        # the layer each term's mask is read from; of a term made of parts from several, the least reviewed
        layers = [max((held[p] for p in ps), key=LAYERS.index) if ps else "" for ps in use] if held else \
            [""] * len(self.terms)
        modality = case["modality"]
        item = {"image": torch.from_numpy(image), "masks": torch.from_numpy(masks),
                "present": torch.from_numpy(present), "layers": layers, "prompts": list(self._prompts[modality]),
                "case_id": case["case_id"], "start": torch.tensor(start)}
        if self.channels is not None:
            item["channel_ids"] = [case["case_id"], *(ch["case_id"] for ch in chans)]
        return item

    def _image(self, out: NDArray[np.float32], store: CaseStore, modality: str, box: Box, pad: Box) -> None:
        """Fill ``out`` with ``store``'s image inside ``box`` (at ``pad``), normalised with the
        store's own parameters (or in physical units); outside the store what air becomes."""
        norm = store.attrs.get("normalisation")
        low = float(norm["clip"][0]) if norm and norm.get("clip") else 0.0
        inside = all(b.stop > b.start for b in box)  # a channel's store may miss the patch entirely
        if self.normalise and norm:
            out[...] = (low - norm["mean"]) / norm["std"]  # what air (or the darkest tissue) becomes
            if inside:
                out[pad] = normalise(store.read("image", box), norm)
        else:  # physical units (HU for CT): air outside a CT
            out[...] = store.outside_value(str(modality))
            if inside:
                out[pad] = store.physical_image(box)


@contextlib.contextmanager
def worker_errors() -> Iterator[None]:
    """A curator error raised in a DataLoader worker process carries its kind to the main process:
    torch re-raises it there as ``type(e)(text)`` (its type, and a text holding its traceback and
    message), and the note lets :class:`curator.errors.CuratorError` read the kind back."""
    try:
        yield
    except CuratorError as e:
        note = kind_note(e)
        if torch.utils.data.get_worker_info() is not None and note not in getattr(e, "__notes__", ()):
            e.add_note(note)
        raise


def _window(start: Sequence[int], patch: Sequence[int], shape: Sequence[int]) -> tuple[Box, Box]:
    """The part of a grid of ``shape`` a patch at ``start`` covers, and where it goes in the patch."""
    box = tuple(slice(max(s, 0), min(s + p, n)) for s, p, n in zip(start, patch, shape, strict=True))
    return box, tuple(slice(b.start - s, b.stop - s) for b, s in zip(box, start, strict=True))


def _names(what: str, value: str | Sequence[str]) -> list[str]:
    """A list of names; a bare string is refused (``terms="liver"`` would be five one-letter terms)."""
    if isinstance(value, str):
        raise ReleaseError("release_error", f"{what} = {value!r}: give a list, e.g. [{value!r}]")
    return [str(v) for v in value]


def _patch(value: Sequence[int]) -> tuple[int, int, int]:
    if isinstance(value, (int, float, str)) or len(value) != 3 or any(
            isinstance(p, bool) or not isinstance(p, (int, float, np.integer)) or not float(p).is_integer()
            or int(p) < 1 for p in value):
        raise ReleaseError("release_error", f"patch_size = {value!r}: give three positive whole numbers, "
                           "e.g. (96, 96, 32)")
    return (int(value[0]), int(value[1]), int(value[2]))
