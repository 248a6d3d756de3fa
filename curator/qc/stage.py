"""The qc stage: per-(case, term) features from the case stores, then cohort bounds and decisions.

``process`` measures every term of every label layer of one store in one pass
(:mod:`curator.qc.features`); ``finalize`` groups the labels into (term, modality, [cardiac phase,] volume
basis) cohorts, sets the bounds, applies the 2-of-3 vote (or the IQR baseline) and the
override list, and writes the ``qc`` table. Nothing is deleted: an excluded label keeps
its row, its mask and its reason; the release marks it in ``labels.qc_decision``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import pyarrow as pa

from curator.config import StageConfig
from curator.errors import ConfigError, CuratorError, InputError, StageError, WorkspaceError
from curator.harmonize.stage import harmonize_taxonomy
from curator.problem_kinds import remedy_for
from curator.pseudolabel.release import PRIVATE_TABLES
from curator.qc.cohort import Override, judge
from curator.qc.config import QCConfig
from curator.qc.features import MeasureOptions
from curator.qc.overrides import REMEDY as OVERRIDES_REMEDY
from curator.qc.overrides import conflicts, load_overrides
from curator.qc.shared import shared_label_keys
from curator.qc.side import swapped_datasets
from curator.qc.store_io import measure_store, store_fingerprint
from curator.runner.freshness import file_digest
from curator.runner.stage import CaseEnv, CaseOutput, CaseResult, Stage, Task, problem_row
from curator.schema import to_arrow

if TYPE_CHECKING:
    from curator.runner.context import Context
    from curator.taxonomy.model import Taxonomy

log = logging.getLogger("curator")


def _body_column(table: pa.Table | None) -> dict[str, dict[str, Any]]:
    """``preprocessed`` rows by case id (body volume, store checksum), when preprocess wrote them."""
    if table is None:
        return {}
    return {r["case_id"]: r for r in table.to_pylist()}


def _measure_failure(case_id: str, path: Path, e: BaseException) -> CuratorError | None:
    """The error of a case QC could not measure: ``store_damaged`` (never cached: preprocess
    rebuilds the store) when :func:`~curator.store_reader.store_damage` finds the store damaged,
    else ``measure_failed`` (cached until the store or curator changes) — it was ``store_error``,
    never cached, with the remedy "re-run preprocess", which rebuilt nothing for an intact store,
    so the same error came back on every run (review s31 #4). An ``OSError`` with no damage found
    is None: raised as it is (not cached: it may be the disk's at the time)."""
    from curator.store_reader import store_damage

    damage = store_damage(path)
    if damage:
        return WorkspaceError("store_damaged", f"the case store is damaged: {'; '.join(damage[:3])}"
                              + (f" (and {len(damage) - 3} more)" if len(damage) > 3 else ""),
                              path=str(path), remedy=remedy_for("store_damaged"))
    if isinstance(e, OSError) and not isinstance(e, CuratorError):
        return None
    return StageError("measure_failed", f"QC cannot measure {case_id} although its store is intact "
                      f"({type(e).__name__}: {e})", path=str(path), remedy=remedy_for("measure_failed"))


class QCStage(Stage):
    name = "qc"
    version = "12"  # 2: a term is measured in the layer the release uses only (no superseded pseudo labels);
    # 3: body_x_mm (the laterality check); 4: mesh sphericity with the mesh's own volume;
    # 5: body_size_ml (volume_norm: section); 6: eccentricity of the voxels' solid, not their centres;
    # 7: the pseudo and revised labels of a case without labels of its own are judged too
    # 8: a cohort's bounds come from its people's labels (pseudo ones judged against them) and
    # leave out the scans dedup dropped as copies; 9: a truncated label above its cohort's complete labels'
    # volume bound (ml) is `oversized`, said in its reason; 10: a label file several cases of a study share
    # (a BraTS seg under its four sequences) is one cohort member, judged once for all its cases;
    # 11: mean/sd_intensity in physical units (a float16 store of a wide-range float image was read ÷ its scale)
    # 12: the derived terms a case's pseudo and revised labels complete (a pseudo kidney of pseudo left and
    # right kidneys) are measured and judged as the dataset's own derived terms are
    config_class = QCConfig
    settings_files = "the overrides file"
    # it judges the revised labels, and the pseudo labels only while pseudolabel is enabled
    reads_tables: ClassVar[dict[str, str]] = {"_labels_revised": "the revised labels (`curator review import`)"}
    follows = ("dedup", "pseudolabel")  # dropped copies leave the cohorts' bounds while dedup is enabled
    tables = ("qc",)
    requires = ("cases",)

    @classmethod
    def settings_files_digest(cls, ctx: Context, config: StageConfig) -> str | None:
        """The overrides file's checksum (finalize applies it: editing it changes decisions)."""
        overrides = cast(QCConfig, config).overrides
        return file_digest(ctx.config.path(overrides)) if overrides else None

    @classmethod
    def settings_files_missing(cls, ctx: Context, config: StageConfig) -> list[str]:
        overrides = cast(QCConfig, config).overrides
        return [str(overrides)] if overrides and not ctx.config.path(overrides).is_file() else []

    def plan(self) -> list[Task]:
        self.extra_problems: list[dict[str, Any]] = []
        self.notes: list[str] = []  # said on the stage's summary line
        ws = self.ctx.workspace
        cases = ws.read_table("cases")
        if cases is None:
            raise StageError("stage_error", "the workspace has no cases table", remedy="run ingest first")
        pre = _body_column(ws.read_table("preprocessed"))
        # a disabled pseudolabel stage's layers are left out of the release: not judged either
        layers = [x for x in cast(QCConfig, self.config).layers
                  if x != "pseudo" or self.ctx.stage_enabled("pseudolabel")]
        # cases with labels of a judged layer: an unlabelled case's pseudo or revised labels too
        other = set()
        private: list[dict[str, Any]] = []
        for layer, table in PRIVATE_TABLES.items():
            got = ws.read_table(table) if layer in layers else None
            other |= set(got.column("case_id").to_pylist()) if got is not None else set()
            if got is not None and layer == "revised":  # those the store still holds, as the release keeps them
                from curator.pseudolabel.review_state import held_revised

                private += held_revised(ws.stores_dir, got.to_pylist())
            elif got is not None:
                private += got.to_pylist()
        derived = self._derived(private)
        # a label ingest rejected is not in the store: nothing to measure (ingest said why)
        cols = [c for c in ("case_id", "dataset", "modality", "has_label", "label_status") if c in cases.column_names]
        rows = [r for r in cases.select(cols).to_pylist()
                if (r["has_label"] and r.get("label_status", "ok") != "rejected") or r["case_id"] in other]
        have = {p.name[:-5] for p in ws.stores_dir.glob("*.zarr")} if ws.stores_dir.is_dir() else set()
        if rows and not have:
            err = WorkspaceError("store_missing", f"no case stores in the workspace: qc measured none of "
                                 f"{len(rows)} labelled cases", path="stores/",
                                 remedy="run the preprocess stage first (it writes stores/<case_id>.zarr)")
            self.extra_problems.append(problem_row(self.name, err, dataset=None, case_id=None, path="stores/",
                                                   severity="warning"))
            log.warning("qc: no case stores in the workspace; run preprocess first")
            return []
        tasks: list[Task] = []
        for r in rows:
            cid = r["case_id"]
            rel = f"stores/{cid}.zarr"
            if cid not in have:
                err = WorkspaceError("store_missing", "the case has labels but no store; qc skipped it",
                                     remedy="check the preprocess problems for this case, then re-run preprocess")
                self.extra_problems.append(problem_row(self.name, err, dataset=r["dataset"], case_id=cid,
                                                       path=rel, severity="warning"))
                continue
            p = pre.get(cid, {})
            body = p.get("body_volume_ml")
            payload = {"store": rel, "dataset": r["dataset"], "modality": p.get("modality") or r["modality"],
                       "body_ml": float(body) if body else None, "layers": layers}
            if cid in derived:  # only then (version 12 re-measured every case once; within it, the others keep their keys)
                payload["derived"] = derived[cid]
            fp = f"{p.get('store_sha256') or ''}|{store_fingerprint(ws.root / rel)}"
            tasks.append(Task(case_id=cid, payload=payload, fingerprint=fp, dataset=r["dataset"], path=rel))
        return tasks

    def _derived(self, private: list[dict[str, Any]]) -> dict[str, list[list[Any]]]:
        """Case -> the derived terms its judged pseudo and revised labels complete, each
        ``[term, origin, [[part, layer], ...]]``, as the release assembles them
        (:mod:`curator.pseudolabel.derived`): measured and judged like the dataset's own."""
        if not private:
            return {}
        from curator.pseudolabel.derived import by_case, derived_plans
        from curator.pseudolabel.release import assemble_rows

        own = self.ctx.workspace.read_table("labels")
        mine = by_case(private)
        rows = [r for r in own.to_pylist() if r["case_id"] in mine] if own is not None else []
        tax = harmonize_taxonomy(self.ctx)
        out: dict[str, list[list[Any]]] = {}
        for cid, assembled in by_case(assemble_rows([*rows, *private])).items():
            plans = derived_plans(assembled, tax)
            if plans:
                out[cid] = [[p["term_id"], p["origin"], [[t, x] for t, x in sorted(p["members"].items())]]
                            for p in plans]
        return out

    @classmethod
    def process(cls, task: Task, config: StageConfig, env: CaseEnv) -> CaseOutput:
        cfg = cast(QCConfig, config)
        p = task.payload
        path = Path(env.workspace) / p["store"]
        opts = MeasureOptions(mesh=cfg.sphericity == "mesh", border_margin=cfg.border_margin)
        try:
            rows = measure_store(path, layers=tuple(p["layers"]), options=opts, body_ml=p["body_ml"],
                                 derived=p.get("derived", ()))
        except CuratorError as e:
            if e.kind != "store_error" or (err := _measure_failure(task.case_id, path, e)) is None:
                raise
            raise err from e
        except (OSError, ValueError, KeyError) as e:
            if (err := _measure_failure(task.case_id, path, e)) is None:
                raise
            raise err from e
        for r in rows:
            r.update(case_id=task.case_id, dataset=p["dataset"], modality=p["modality"])
        out = CaseOutput(rows={"qc": rows})
        if not rows:
            empty = InputError("label_empty", "no label voxels in the store", path=str(path),
                               remedy="nothing to do if the case has no annotated structure; if its label file "
                               "holds voxels, the harmonize and preprocess problems of this case say why none "
                               "reached the store (values mapped to no taxonomy term are left out)")
            out.problems.append(problem_row(cls.name, empty, dataset=p["dataset"], case_id=task.case_id,
                                            path=task.path, severity="info"))
        return out

    def finalize(self, results: list[CaseResult]) -> dict[str, pa.Table]:
        cfg = cast(QCConfig, self.config)
        rows = [row for r in results for row in r.rows.get("qc", [])]
        overrides = self._overrides(cfg)
        tax = harmonize_taxonomy(self.ctx)
        cases = self.ctx.workspace.read_table("cases")
        cols = [c for c in ("case_id", "orientation", "study_key", "label_sha256", "phase") if cases is not None
                and c in cases.column_names]
        case_rows = cases.select(cols).to_pylist() if cases is not None else []
        phases = {r["case_id"]: r.get("phase") for r in case_rows}  # ED and ES frames: cohorts of their own
        judged = judge(rows, cfg, overrides, tax, copies=self._dropped_copies(), shared=shared_label_keys(case_rows),
                       phases=phases)
        by_case: dict[str, list[dict[str, Any]]] = {}
        for r in judged:  # once: overrides x rows was minutes for a file of stale case ids
            by_case.setdefault(r["case_id"], []).append(r)
        used = {(o.case_id, o.term_id, o.origin) for o in overrides
                if any(o.matches(r) for r in by_case.get(o.case_id, ()))}
        ids = sorted(by_case)
        unmatched: list[InputError] = []
        for o in overrides:
            if (o.case_id, o.term_id, o.origin) not in used:
                why, remedy = unmatched_override(o, by_case, tax, ids)
                unmatched.append(InputError("override_unmatched", f"override for {o.case_id} / {o.term_id} (row "
                                            f"{o.row}) matches no label: {why}", path=cfg.overrides, remedy=remedy,
                                            case_id=o.case_id))
        if unmatched:
            said = f"{len(unmatched)} of {len(overrides)} override rows matched no label"
            if cfg.on_unmatched_override == "error":  # before any table is written: the release is not built
                raise ConfigError("override_unmatched", f"{said} (stages.qc.on_unmatched_override: error): "
                                  + "; ".join(e.detail for e in unmatched[:20])
                                  + (f"; and {len(unmatched) - 20} more" if len(unmatched) > 20 else ""),
                                  path=str(self.ctx.config.path(str(cfg.overrides))),
                                  remedy="fix those rows (each says why it matched nothing) or remove them; or set "
                                  "on_unmatched_override: warn to apply the others and record these as problems")
            self.notes.append(f"{said} (problems: override_unmatched)")
            for err in unmatched:
                self.extra_problems.append(problem_row(self.name, err, dataset=None, case_id=err.case_id,
                                                       path=cfg.overrides, severity="warning"))
        self._overruled(judged, tax, cfg)
        orientations = {r["case_id"]: r.get("orientation") for r in case_rows}
        margin = cfg.side_margin_mm if cfg.side_margin_mm is not None else 10.0
        # a whole dataset read the wrong way round (its names, or its headers), not a bad case
        for ds, err in swapped_datasets(judged, orientations=orientations, margin_mm=margin, tax=tax):
            self.extra_problems.append(problem_row(self.name, err, dataset=ds, case_id=None, path=err.path,
                                                   severity="warning"))
        counts: dict[str, int] = {}
        for r in judged:
            counts[r["decision"]] = counts.get(r["decision"], 0) + 1
        log.info("qc (%s): %s", cfg.method, ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "no labels")
        return {"qc": to_arrow("qc", judged)}

    def _overruled(self, judged: list[dict[str, Any]], tax: Taxonomy, cfg: QCConfig) -> None:
        """A person's include of a label with a part QC excluded (same case and layer) is overruled at
        release — the label holds the excluded part, so training leaves it out
        (:func:`curator.qc.release.exclude_with_parts`): each is an ``override_overruled`` warning
        naming the parts and why they are excluded, and the summary line says so."""
        from curator.qc.release import OVERRULED_REMEDY, excluded_parts

        lost = excluded_parts(judged, tax, layer="origin", decision="decision", reason="reason")
        rows = [r for r in judged if r["decision"] == "override_include"
                and (r["case_id"], r["origin"], r["term_id"]) in lost]
        if not rows:
            return
        self.notes.append(f"{len(rows)} override include(s) overruled: a part of the label is excluded "
                          "(problems: override_overruled)")
        for r in rows:
            why = "; ".join(f"{t} ({w})" if w else t for t, w in lost[(r["case_id"], r["origin"], r["term_id"])])
            err = InputError("override_overruled", f"the override include of {r['case_id']} / {r['term_id']} "
                             f"({r['origin']}) is overruled at release: a part of it is excluded — {why} — so the "
                             "label holds an excluded part and training leaves it out", path=cfg.overrides,
                             remedy=OVERRULED_REMEDY, case_id=r["case_id"])
            self.extra_problems.append(problem_row(self.name, err, dataset=r.get("dataset"), case_id=r["case_id"],
                                                   path=cfg.overrides, severity="warning"))

    def _dropped_copies(self) -> set[str]:
        """Cases dedup dropped as copies of a kept scan (while dedup is enabled)."""
        dup = self.ctx.workspace.read_table("duplicates") if self.ctx.stage_enabled("dedup") else None
        if dup is None:
            return set()
        return {r["case_id"] for r in dup.select(["case_id", "kept"]).to_pylist() if not r["kept"]}

    def _overrides(self, cfg: QCConfig) -> list[Override]:
        if not cfg.overrides:
            return []
        import dataclasses

        tax = harmonize_taxonomy(self.ctx)  # `term:` may be a name or synonym ("kidney and mass"), as in queries
        out = []
        for o in load_overrides(self.ctx.config.path(cfg.overrides), require_reason=cfg.override_reason == "required"):
            found = tax.resolve(o.term_id) if o.term_id not in tax.terms else None
            out.append(dataclasses.replace(o, term_id=found.id) if found is not None else o)
        clash = conflicts(out)  # two names of one term (`kidney and mass`, `kidney_and_mass`) are one label
        if clash:
            raise ConfigError("config_error", "bad qc override rows: " + "; ".join(clash[:10]),
                              path=str(self.ctx.config.path(cfg.overrides)), remedy=OVERRIDES_REMEDY)
        return out


def unmatched_override(o: Override, by_case: Mapping[str, list[dict[str, Any]]], tax: Taxonomy,
                       ids: list[str] | None = None) -> tuple[str, str]:
    """Why override ``o`` matches none of the qc rows (``by_case``: case id -> its rows; ``ids``:
    the case ids, sorted), and what to do: a term the taxonomy does not know (with the close
    names), a case the qc table lacks (with close case ids), a label of the case under another
    origin, or a term the case has no label of (with its terms).

    >>> from curator.taxonomy import load_taxonomy
    >>> rows = {"KiTS23__case_00001": [{"case_id": "KiTS23__case_00001", "term_id": "pancreas", "origin": "pseudo"}]}
    >>> o = Override("KiTS23__case_00001", "pancreas", "original", "exclude", "", row=3)
    >>> unmatched_override(o, rows, load_taxonomy())[0]
    "the case's pancreas label is of origin 'pseudo', not 'original'"
    """
    import difflib

    if o.term_id not in tax.terms:
        close = ", ".join(t.name for t in tax.suggest(o.term_id))
        return (f"{o.term_id!r} is not a taxonomy term" + (f" (close: {close})" if close else ""),
                "give a term id or name `curator labels resolve NAME` resolves")
    of_case = by_case.get(o.case_id, [])
    if not of_case:
        near = difflib.get_close_matches(o.case_id, ids if ids is not None else sorted(by_case), n=3, cutoff=0.8)
        return (f"the qc table has no case {o.case_id!r}" + (f" (close: {', '.join(near)})" if near else
                                                              " (a case dedup dropped, or not in the workspace)"),
                "give the case id as the qc table has it (`select distinct case_id from qc` in `curator query`)")
    origins = sorted({str(r.get("origin")) for r in of_case if r["term_id"] == o.term_id})
    if origins:
        return (f"the case's {o.term_id} label is of origin {', '.join(map(repr, origins))}, not {o.origin!r}",
                "give that origin, or leave `origin` out to match every layer")
    terms = sorted({r["term_id"] for r in of_case})
    return (f"the case has no {o.term_id} label (its labels: {', '.join(terms[:12])}"
            + (f" and {len(terms) - 12} more" if len(terms) > 12 else "") + ")",
            "check the term against the case's labels in the qc table")
