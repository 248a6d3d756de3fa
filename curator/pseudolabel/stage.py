"""The pseudolabel stage: an ensemble labels what a case's dataset left unlabelled, with attention.

Per case (``process``): open the case store, work out the target terms (the ensemble's
terms that the dataset does not annotate, nor annotates a whole of), run the ensemble
(:func:`~curator.pseudolabel.infer.infer_case`), write the ``pseudo`` label layer and the
attention bit map, and return ``attention`` rows and ``labels`` rows (origin ``pseudo``,
kept in the private workspace table ``_labels_pseudo`` until release assembly).
``finalize`` ranks cases by attention size for review.
"""

from __future__ import annotations

import difflib
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import pyarrow as pa
import torch

from curator.errors import ConfigError, InputError
from curator.harmonize.stage import harmonize_taxonomy
from curator.io.fsutil import atomic_write_json, sha256_json
from curator.pseudolabel import outputs, prefetch
from curator.pseudolabel.config import PseudolabelConfig, check_ensemble
from curator.pseudolabel.infer import ensemble_terms, infer_case
from curator.pseudolabel.loading import load_ensemble, sourced
from curator.pseudolabel.models import ModelSpec, ensemble_fingerprint, keyed_spec
from curator.pseudolabel.terms import ancestors, resolve_model_terms, term_id, uncovered
from curator.runner.stage import CaseEnv, CaseOutput, CaseResult, Stage, Task, problem_row
from curator.schema import to_arrow
from curator.store import CaseStore

if TYPE_CHECKING:
    from curator.config import StageConfig
    from curator.runner.context import Context

log = logging.getLogger("curator")


T = TypeVar("T")


def _where(spec: ModelSpec, check: Callable[..., T], *args: Any) -> T:
    """``check(*args)``, its ConfigError about the model ``spec`` saying where the entry is
    written (an output no term names, outputs that do not match the terms), as the loading
    errors say it."""
    try:
        return check(*args)
    except ConfigError as e:
        said = sourced(e, spec.source)
        if said is e:
            raise
        raise said from e


class PseudolabelStage(Stage):
    name = "pseudolabel"
    version = "3"  # 2: overlap as two models claiming a voxel; attention maps as a group of bit words
    # 3: the models' std by Welford's running sums (identical members: 0, was up to 3.5e-4)
    # torch threads set by stages.pseudolabel.threads, attrs "torch" (2026-12-06): no bump — the
    # labels are the same, the attention floats move in the 7th digit at most, and a bump would redo
    # every case; cases labelled before count as "unrecorded" in release.json["inference"]
    config_class = PseudolabelConfig
    settings_files = "the model files"
    tables = ("attention", "_labels_pseudo")
    requires = ("cases",)
    gpu = True

    @classmethod
    def any_gpu(cls, config: StageConfig) -> bool:
        """``auto`` and ``cuda`` take the worker's GPU (a local pool gives each worker its own);
        ``cuda:N`` names one GPU for every worker, ``cpu`` none."""
        return cast(PseudolabelConfig, config).device in ("auto", "cuda")

    @classmethod
    def settings_files_digest(cls, ctx: Context, config: StageConfig) -> str | None:
        """The ensemble's fingerprint: every model's files by content, and its spec."""
        specs = cast(PseudolabelConfig, config).specs(ctx.config.folder)
        return ensemble_fingerprint(specs) if specs else None

    @classmethod
    def settings_files_parts(cls, ctx: Context, config: StageConfig) -> dict[str, str] | None:
        """Each model's fingerprint by its name: `curator status` names the model that changed."""
        specs = cast(PseudolabelConfig, config).specs(ctx.config.folder)
        return {s.name: s.fingerprint() for s in specs} or None

    @classmethod
    def settings_files_missing(cls, ctx: Context, config: StageConfig) -> list[str]:
        """The ensemble file is read (a missing one raises); then every member's files."""
        specs = cast(PseudolabelConfig, config).sourced_specs(ctx.config.folder)
        return [f"{p} (`{role}` of model {s.name!r}, given in {where})" for s, where in specs
                for role, p in (("path", s.path), ("weights", s.weights)) if p and not Path(p).exists()]

    def plan(self) -> list[Task]:
        cfg = cast(PseudolabelConfig, self.config)
        self.extra_problems: list[dict[str, Any]] = []
        specs = cfg.specs(self.ctx.config.folder)
        if not specs:
            log.info("pseudolabel: no models configured (stages.pseudolabel.ensemble / models); skipped")
            return []
        fingerprints = [s.fingerprint() for s in specs]  # every weights file read, once a run
        self.settings_parts = {s.name: f for s, f in zip(specs, fingerprints, strict=True)}  # in the run's record
        ensemble = self._ensemble(cfg, specs, fingerprints)
        models_fp = ensemble_fingerprint(specs, fingerprints)
        ws = self.ctx.workspace
        cases = ws.read_table("cases")
        annotated = self._annotated()
        tasks: list[Task] = []
        missing = 0
        unlabelled: dict[str, int] = {}  # modality -> cases no member of the ensemble runs on
        for row in (cases.to_pylist() if cases is not None else []):
            cid = row["case_id"]
            store = ws.stores_dir / f"{cid}.zarr"
            if not row.get("has_image") or not (store / "zarr.json").exists():
                missing += bool(row.get("has_image"))
                continue
            if not any(s.runs_on(row.get("modality")) for s in specs):  # no member labels this modality:
                m = str(row.get("modality") or "unknown")  # planned all the same, so that process()
                unlabelled[m] = unlabelled.get(m, 0) + 1  # removes an earlier ensemble's pseudo layer
            upstream = ws.read_case_result("preprocess", cid) or {}
            fp = sha256_json([upstream.get("key"), row.get("image_sha256"), row.get("label_sha256"), models_fp])
            payload = {"dataset": row["dataset"], "modality": row.get("modality"),
                       "annotated": sorted(annotated.get(cid) or self._spec_terms(row)), "ensemble": ensemble}
            tasks.append(Task(cid, payload, fp[:32], dataset=row["dataset"], path=f"stores:{cid}.zarr"))
        if missing:
            log.info("pseudolabel: %d case(s) have no store yet (run preprocess); skipped", missing)
        if unlabelled:
            self._not_applicable(cfg, specs, unlabelled, len(tasks))
        runs = [t for t in tasks if any(s.runs_on(t.payload.get("modality")) for s in specs)]
        queue = [[t.case_id, str(ws.stores_dir / f"{t.case_id}.zarr")] for t in runs]  # prefetched in turn
        atomic_write_json(ws.stage_dir(self.name) / "queue.json", queue, indent=None)
        return tasks

    def _not_applicable(self, cfg: PseudolabelConfig, specs: tuple[ModelSpec, ...], unlabelled: dict[str, int], planned: int) -> None:
        """Say which cases no member of the ensemble runs on (its models' ``modalities``): a
        warning when that is every case (the run labels nothing), else a log line."""
        models = "; ".join(f"{s.name}: {', '.join(s.modalities) or 'any'}" for s in specs)
        cases = ", ".join(f"{n} {m}" for m, n in sorted(unlabelled.items()))
        if sum(unlabelled.values()) < planned:
            log.info("pseudolabel: no model of the ensemble runs on %s case(s) (models' modalities: %s); "
                     "they get no pseudo labels", cases, models)
            return
        err = ConfigError("ensemble_not_applicable", f"no model of the ensemble runs on any case: the models "
                          f"declare modalities ({models}), the workspace's cases are {cases}; no case gets pseudo "
                          "labels (an earlier ensemble's are removed)",
                          remedy="give the ensemble models trained for the cases' modality, or correct the models' "
                          "`modalities:` (leave it out to run a model on every case)")
        where = cfg.ensemble or "stages.pseudolabel.models"  # as pipeline.yaml names it
        self.extra_problems.append(problem_row(self.name, err, dataset=None, case_id=None, path=where,
                                               severity="warning"))

    def _ensemble(self, cfg: PseudolabelConfig, specs: tuple[ModelSpec, ...], fingerprints: list[str]
                  ) -> dict[str, Any]:
        """The ensemble as every case gets it, checked once before any case runs: loaded on the
        CPU (a missing or broken weights file, or a TorchScript archive's own metadata), output
        names resolved to the pipeline taxonomy's term ids, the patch checked, and one forward
        pass per model on a zero patch (outputs that do not match the declared terms) — each a
        single ConfigError now rather than a failure per case. Also each term's part-of
        ancestors and preferred name in that taxonomy."""
        tax = harmonize_taxonomy(self.ctx)
        loaded = load_ensemble(specs, "cpu", fingerprints)
        resolved = tuple(s for m, spec in zip(loaded, specs, strict=True)
                         for s in _where(spec, resolve_model_terms, [m.spec], tax))
        patch = check_ensemble(resolved, cfg.patch)
        with torch.inference_mode():
            for m, spec in zip(loaded, specs, strict=True):
                _where(spec, m.predict, torch.zeros((1, 1, *patch), dtype=torch.float32))
        terms = list(dict.fromkeys(t for s in resolved for t in s.terms))
        unknown = [t for t in cfg.terms if t not in terms]
        if unknown:  # a typo labelled nothing, silently
            hints = {t: difflib.get_close_matches(t, terms, n=1) for t in unknown}
            raise ConfigError("config_error", "stages.pseudolabel.terms names term(s) no model of the ensemble "
                              "predicts: " + ", ".join(f"{t!r}" + (f" (did you mean {h[0]!r}?)" if h else "")
                                                       for t, h in hints.items()),
                              remedy=f"the ensemble predicts {', '.join(terms)} (term ids)")
        return {"models": [s.to_dict() for s in resolved], "fingerprints": fingerprints,
                "ancestors": {t: sorted(ancestors(t, tax)) for t in terms},
                "names": {t: tax.term(t).name for t in terms}}

    def cache_payload(self, task: Task) -> Any:
        """The payload without the models' file paths: the fingerprint holds their checksums."""
        ensemble = dict(task.payload["ensemble"])
        ensemble["models"] = [keyed_spec(m) for m in ensemble["models"]]
        ensemble.pop("fingerprints", None)  # in the fingerprint already
        return {**task.payload, "ensemble": ensemble}

    def outputs_exist(self, result: CaseResult) -> bool:
        """A cached case's pseudo layer and attention map must still be there (a store that
        preprocess rebuilt has lost its pseudo layer: infer again)."""
        if not result.rows.get("_labels_pseudo"):
            return True
        from curator.store_reader import store_damage

        ws = self.ctx.workspace
        store = ws.stores_dir / f"{result.case_id}.zarr"
        return ((store / "labels" / "pseudo").is_dir() and not store_damage(store, parts=("labels/pseudo",))
                and (outputs.attention_path(ws.root, result.case_id) / "zarr.json").exists())

    def _annotated(self) -> dict[str, set[str]]:
        """Annotated term ids per case from the harmonize ``labels`` table (when it exists)."""
        labels = self.ctx.workspace.read_table("labels")
        out: dict[str, set[str]] = {}
        if labels is None or "annotated" not in labels.column_names:
            return out
        for r in labels.select(["case_id", "term_id", "origin", "annotated"]).to_pylist():
            if r["origin"] == "original" and r["annotated"]:
                out.setdefault(r["case_id"], set()).add(r["term_id"])
        return out

    def _spec_terms(self, row: dict[str, Any]) -> set[str]:
        src = self.ctx.sources.get(row.get("source") or "") or next(
            (s for s in self.ctx.sources.values() if s.spec.name == row["dataset"]), None)
        if src is None:
            return set()
        tax = harmonize_taxonomy(self.ctx)  # a lab's own names, as harmonize reads them
        return {t.id if (t := tax.resolve(n)) is not None else term_id(n) for n in src.spec.annotated_terms()}

    @classmethod
    def process(cls, task: Task, config: Any, env: CaseEnv) -> CaseOutput:
        cfg = cast(PseudolabelConfig, config)
        p = task.payload
        ws = Path(env.workspace)
        store = CaseStore(ws / "stores" / f"{task.case_id}.zarr")
        if not store.has_image():
            raise InputError("image_missing", "the case store has no image", path=str(store.path))
        ens = p["ensemble"]
        specs = tuple(ModelSpec.from_dict(d) for d in ens["models"])
        if not any(s.runs_on(p.get("modality")) for s in specs):  # no member labels the case's modality:
            outputs.clear_case(store, ws, task.case_id)  # an earlier ensemble's labels are not this one's
            return CaseOutput()
        device = cfg.resolved_device()
        threads = cfg.threads or env.threads
        if threads and device == "cpu":
            import torch

            torch.set_num_threads(threads)
        loaded = load_ensemble(specs, device, ens["fingerprints"])
        # only the members declared for the case's modality run on it (and count in n_models)
        keep = [i for i, s in enumerate(specs) if s.runs_on(p.get("modality"))]
        models = tuple(loaded[i] for i in keep)
        case_specs = tuple(specs[i] for i in keep)
        case_fps = [ens["fingerprints"][i] for i in keep]
        annotated = set(p["annotated"]) | set(store.terms("original"))  # [] without an original layer
        candidates = [t for t in ensemble_terms(models) if not cfg.terms or t in cfg.terms]
        targets = uncovered(candidates, annotated, ens["ancestors"])
        patch = check_ensemble(specs, cfg.patch)
        out = CaseOutput()
        if not targets:  # nothing to label now: an earlier run's pseudo labels are not this run's
            outputs.clear_case(store, ws, task.case_id)
            if cfg.use_prefetch(device):
                prefetch.schedule_next(ws, task.case_id, specs, patch, cfg)
            return out
        reader, orientation, patch_s = prefetch.take(store.path) or prefetch.make_reader(store, specs, patch, cfg)
        if cfg.use_prefetch(device):
            prefetch.schedule_next(ws, task.case_id, specs, patch, cfg)
        res = infer_case(reader, models, targets, patch=patch_s, params=cfg.params(), overlap=cfg.overlap,
                         batch=cfg.batch_size, amp=cfg.amp, orientation=orientation, etta=cfg.etta,
                         blend=cfg.blend)
        outputs.write_case(store, ws, task.case_id, res, case_specs, cfg, case_fps)
        out.rows = outputs.rows(task.case_id, p["dataset"], p.get("modality"), store, res, models, cfg, ens["names"])
        return out

    def finalize(self, results: list[CaseResult]) -> dict[str, pa.Table]:
        cfg = cast(PseudolabelConfig, self.config)
        att = [r for res in results for r in res.rows.get("attention", [])]
        labels = [r for res in results for r in res.rows.get("_labels_pseudo", [])]
        dups = self.ctx.workspace.read_table("duplicates")
        dropped = {r["case_id"] for r in dups.select(["case_id", "kept"]).to_pylist() if not r["kept"]} \
            if dups is not None else set()
        return {"attention": to_arrow("attention", rank_cases(att, cfg.review_fraction, dropped)),
                "_labels_pseudo": to_arrow("labels", labels)}


def rank_cases(rows: list[dict[str, Any]], fraction: float, dropped: set[str] | frozenset[str] = frozenset()
               ) -> list[dict[str, Any]]:
    """Fill ``case_attention_size``, ``review_rank`` and ``review`` (top ``fraction`` of cases).
    Duplicates dedup ``dropped`` rank after every other case and are never flagged: they are
    out of the training view, so reviewing them would spend a reviewer's time for nothing."""
    totals: dict[str, float] = {}
    for r in rows:
        totals[r["case_id"]] = totals.get(r["case_id"], 0.0) + float(r["attention_size"])
    order = sorted(totals, key=lambda c: (c in dropped, -round(totals[c], 9), c))
    rank = {c: i + 1 for i, c in enumerate(order)}
    k = math.ceil(fraction * sum(c not in dropped for c in order))
    out = []
    for r in rows:
        c = r["case_id"]
        out.append({**r, "case_attention_size": totals[c], "review_rank": rank[c],
                    "review": rank[c] <= k and totals[c] > 0})
    return out
