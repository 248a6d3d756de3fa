"""The preprocess stage: ``cases`` → one Zarr store per case + the ``preprocessed`` table."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import NDArray

from curator.config import StageConfig
from curator.errors import CuratorError, InputError
from curator.harmonize.stage import harmonize_taxonomy
from curator.io.confined import resolve_inside
from curator.io.formats import read_volume
from curator.io.volume import Geometry, Volume
from curator.preprocess import terms as termmap
from curator.preprocess.body import body_coverage_issue, body_rule_of
from curator.preprocess.config import PreprocessConfig
from curator.preprocess.core import Prepared, preprocess_arrays, reoriented_spacing
from curator.preprocess.intensity import whole_rule_of
from curator.preprocess.labels import Plane, label_map_plane, structure_planes
from curator.registry.fixes import (
    apply_array_fixes,
    apply_label_fixes,
    for_files,
    intensity_offset,
    non_finite_fill,
)
from curator.runner.stage import (
    CaseEnv,
    CaseOutput,
    CaseResult,
    Stage,
    Task,
    fault_path,
    problem_row,
)
from curator.store import CaseStore, store_sha256
from curator.workspace import ChecksumCache

if TYPE_CHECKING:
    import pyarrow as pa

PREPROCESS_ARRAYS = ("image", "body", "labels/original")  # what this stage writes into a case store
STATS = (("min", "min"), ("max", "max"), ("mean", "mean"), ("std", "std"), ("p0.5", "p00_5"),
         ("p1", "p01"), ("p50", "p50"), ("p99", "p99"), ("p99.5", "p99_5"))


class PreprocessStage(Stage):
    name = "preprocess"
    # 2: linear resampling order y, x, z; 3: integer NIfTI scaled by whole numbers stays integer
    # (float16 stores rounded HU > 2048; float images of whole numbers too since, see below), CT body threshold in stored units, nonzero crop;
    # 4: the resampled extent centred on the input's; codes resampling erased are left out of the store;
    # float images shifted once (not in place), far fill values clipped (the comment said 4, the
    # version stayed 3: cached cases were not redone); 5: PNG slice labels put on the slices of the
    # DICOM files they annotate (label_geometry.slices); 6: smooth labels' ties take the nearest
    # source voxel (they went to background: a 5 mm ball lost 9 % at 0.5 -> 1 mm). Not bumped for the
    # chunks' CRC32C (2026-12-06): the voxels are the same, the reader takes stores with and without it,
    # and a bump would redo every case's preprocessing and pseudo-labelling in an existing workspace;
    # Not bumped for the MR/PET body threshold (half, PET a quarter, of the way from the image's
    # 0.5th percentile to Otsu; 0.5 × Otsu moved with an intensity offset): an MR/PET case's key carries the rule
    # (``body_rule`` in its payload), so those cases are redone and CT stores — unchanged — are not.
    # Cached CT cases lack the new body_mask_* warnings and the cubic interpolation_clipped info row
    # until they are preprocessed again.
    # Not bumped for float images of whole numbers stored int16 (float16 rounded HU above 2048):
    # the key of a case whose float image may be one carries the rule (``whole_float``, from
    # ingest's dtype and range: ``whole_rule_of``), so integer sources' stores are kept.
    # Not bumped for NIfTI label maps whose header scales their codes
    # by whole numbers, read as the stored codes since: those cases' keys carry the scaling and the
    # declared values that decide it (``label_scaling``, ``declared``), so their stores alone are redone.
    version = "6"
    config_class = PreprocessConfig
    tables = ("preprocessed",)
    requires = ("cases",)

    def plan(self) -> list[Task]:
        config = cast(PreprocessConfig, self.config)
        self.extra_problems: list[dict[str, Any]] = []
        table = self.ctx.workspace.read_table("cases")
        rows = table.to_pylist() if table is not None else []
        medians = _median_spacings(rows, config.orientation) if config.spacing == "median" else {}
        tasks = []
        cache: dict[tuple[str, frozenset[str]], dict[str, list[str]]] = {}
        tax = harmonize_taxonomy(self.ctx)  # store planes name the terms the labels table names
        checksums: dict[str, ChecksumCache] = {}  # what ingest's plan found in the label files' headers

        def case_terms(spec: Any, keys: list[str] | None) -> dict[str, list[str]]:
            """Per-structure codes of one case (a derived term only where its files complete it),
            once per dataset and set of files."""
            key = (spec.name, frozenset(keys or ()))
            if key not in cache:
                cache[key] = termmap.structure_terms(spec, key[1], tax)
            return cache[key]

        for r in rows:
            if not (r["has_image"] or r["has_label"]) or r.get("shape") is None:
                continue
            src = self.ctx.sources.get(r["source"])
            if src is None:
                continue  # a source no longer configured: its cases are not preprocessed
            spec = src.spec
            labels_ok = r["has_label"] and r["label_status"] != "rejected"
            encoding = spec.labels.encoding
            image_path = r["image_path"] if r["has_image"] else None
            label_paths = list(r["label_paths"] or []) if labels_ok else []
            payload = {
                "source": r["source"], "dataset": r["dataset"], "modality": r["modality"],
                "image_path": image_path, "image_channel": r["image_channel"], "label_paths": label_paths,
                "label_keys": list(r["label_keys"] or []) if labels_ok else [],
                "label_rejected": bool(r["has_label"] and not labels_ok),
                "encoding": encoding,
                "terms": (case_terms(spec, r["label_keys"] if labels_ok else [])
                          if encoding == "per_structure" else termmap.value_terms(spec, tax)),
                # only the fixes of the files read here: a one-case fix re-runs (and re-infers) one case
                "fixes": for_files(spec.fixes, [image_path, *label_paths]),
                "ignore": sorted({str(v) for v in spec.labels.ignore}),
                "spacing": list(medians[r["dataset"]]) if r["dataset"] in medians else None,
            }
            if (rule := body_rule_of(str(r["modality"]))) is not None:  # MR/PET: their body threshold changed
                payload["body_rule"] = rule  # (see `version`)
            if r["has_image"] and (rule := whole_rule_of(r.get("dtype"), r.get("intensity_min"),
                                                         r.get("intensity_max"))) is not None:
                payload["whole_float"] = rule  # a float image of whole numbers is stored int16 (see `version`)
            if str(r["modality"]).upper() == "PET" and (config.pet_clip or config.pet_percentiles):
                # PET's own window: only PET cases' keys carry it (CT and MR stores do not change)
                payload["pet_window"] = {"pet_clip": list(config.pet_clip),
                                         "pet_percentiles": list(config.pet_percentiles)}
            if src.name not in checksums:
                checksums[src.name] = ChecksumCache(self.ctx.workspace, src.name)
            scaled = {rel: sc for rel in label_paths if (sc := checksums[src.name].known_scaling(rel)) is not None}
            if scaled:  # read as ingest read them (see `version`): these cases alone are keyed by it
                payload["label_scaling"] = scaled
                payload["declared"] = sorted(spec.labels.declared_values())
            names = src.structure_names(self.ctx.workspace, payload["label_keys"])
            if names:  # a pseudonymous source's undeclared structures: the store names their keys only
                payload["published_keys"] = names
            fp = f"{r.get('image_sha256') or ''}|{r.get('label_sha256') or ''}"
            tasks.append(Task(case_id=r["case_id"], payload=payload, fingerprint=fp, dataset=r["dataset"],
                              path=f"{r['source']}:{r['image_path'] or (r['label_paths'] or [''])[0]}"))
        return tasks

    def outputs_exist(self, result: CaseResult) -> bool:
        """A cached case's store must still be in the workspace, its arrays whole (a store deleted
        or damaged by hand is rebuilt): every shard file written is there with an intact chunk
        index (``store_damage``: ~2 ms a store, no voxels read). A damaged store used to pass
        as cached, and a release published it (zeros where a shard was) and verified it OK."""
        from curator.store_reader import store_damage

        root = self.ctx.workspace.root
        return all(not store_damage(root / r["store"], parts=PREPROCESS_ARRAYS)
                   for r in result.rows.get("preprocessed", []) if r.get("store"))

    def finalize(self, results: list[CaseResult]) -> dict[str, pa.Table]:
        for r in results:  # rows cached by an earlier version listed a term once per plane code
            for row in r.rows.get("preprocessed", []):
                row["terms"] = list(dict.fromkeys(row.get("terms") or []))
        return super().finalize(results)

    @classmethod
    def process(cls, task: Task, config: StageConfig, env: CaseEnv) -> CaseOutput:
        config = cast(PreprocessConfig, config)
        p = task.payload
        if "pet_window" in p:  # not in the per-case config (see PreprocessConfig.pet_clip)
            config = config.replace(**{k: tuple(v) for k, v in p["pet_window"].items()})
        root = Path(env.sources[p["source"]])
        out = CaseOutput()

        def warn(err: InputError, severity: str = "warning") -> None:  # the row names the file it is about
            out.problems.append(problem_row(cls.name, err, dataset=p["dataset"], case_id=task.case_id,
                                            path=fault_path(task, err, env), severity=severity))

        image, offset, guessed = None, 0.0, None
        if p["image_path"]:
            image = read_volume(resolve_inside(root, root / p["image_path"]), role="image", channel=p["image_channel"],
                                non_finite=non_finite_fill(p["fixes"], p["image_path"]))  # ingest reported it
            guessed = geometry_guessed(image.meta)
            image, offset = image_fixes(image, p["fixes"], p["image_path"])
        geometry = image.geometry if image is not None else None
        planes, geometry = read_label_planes(p, root, geometry, warn)
        if geometry is None:
            raise InputError("label_empty", "the case has neither a readable image nor labels")
        if p["label_rejected"]:
            warn(InputError("label_rejected", "ingest rejected this case's labels; the store has no `original` "
                                              "label layer (a later stage may still give it a pseudo one)"))
        spacing = tuple(p["spacing"]) if p["spacing"] else None
        prep = preprocess_arrays(image.array if image is not None else None, geometry, planes, p["modality"],
                                 config, spacing=spacing, intensity_offset=offset)
        del image, planes
        if prep.clipped is not None:
            n_out, lo, hi = prep.clipped
            warn(InputError("image_values_clipped",
                            f"{n_out} image voxels hold values more than 1024 times beyond the rest of the image "
                            f"(a fill value?); they were set to the edge of the image's range [{lo:.6g}, {hi:.6g}] "
                            "so the stored image keeps its precision", path=p["image_path"],
                            remedy="nothing, if they are padding; otherwise check the image"))
        if prep.saturated and prep.image is not None:  # only an integer store clips
            info = np.iinfo(prep.image.dtype)
            warn(InputError("interpolation_clipped",
                            f"{prep.saturated} voxels of the cubic (B-spline) resampling overshot the range of the "
                            f"{prep.image.dtype} store [{info.min}, {info.max}] (ringing next to metal or another "
                            "very bright or dark structure) and were set to its limit", path=p["image_path"],
                            remedy="nothing if they lie in metal or padding; for values that stay inside the "
                            "source's range (quantitative HU) use stages.preprocess.image_interpolation: linear"),
                 severity="info")
        if prep.image is not None and prep.body_threshold is not None:
            issue = body_coverage_issue(prep.body_voxels or 0, int(np.prod(prep.resampled_shape)), p["modality"],
                                        prep.body_threshold)
            if issue is not None:  # whole field: info — prostate, cardiac, knee MR, cropped CT hold no air
                warn(issue, "warning" if issue.kind == "body_mask_empty" else "info")
        if prep.flat_window is not None:
            warn(prep.flat_window)
        for raw, terms in prep.lost:
            warn(InputError("label_lost_in_resampling",
                            f"label {raw} ({', '.join(terms) or 'no term'}) has voxels in the source but none on the "
                            f"{'×'.join(f'{x:g}' for x in prep.geometry.spacing)} mm grid: it is left out of the store, "
                            "so training treats it as not annotated in this case (never as absent)",
                            remedy="a finer target spacing (stages.preprocess.target_spacing_mm or spacing: median) "
                            "keeps it; label_interpolation: smooth rarely does"))
        dest = Path(env.workspace) / "stores" / f"{task.case_id}.zarr"
        attrs = {"case_id": task.case_id, "dataset": p["dataset"], **prep.attrs,
                 "label_raw_values": [{str(k): p.get("published_keys", {}).get(v, v) for k, v in raw.items()}
                                      for _, _, raw in prep.planes],
                 "stage_version": cls.version, "config_hash": config.config_hash()}
        if guessed:  # what the header lacked (ingest warned of it): the store gets no OME position for a guess
            attrs["geometry_guessed"] = guessed
        _keep_revised(dest, warn)
        CaseStore.create(dest, geometry=prep.geometry, attrs=attrs, image=prep.image, body=prep.body,
                         labels=[(a, v) for a, v, _ in prep.planes], chunks=tuple(config.inner_chunks) or None)
        _carry_revised(dest, warn)
        out.rows = {"preprocessed": [_row(task.case_id, p, prep, store_sha256(dest))]}
        return out


def _keep_revised(dest: Path, warn: Any) -> None:
    """Before a store is replaced: a revised layer imported without a workspace copy (by an older
    curator) gets one, so the rebuild can carry it. The store being replaced may be damaged (that
    is why it is rebuilt: its root ``zarr.json`` lost or emptied): its revised layer is kept only
    when it reads whole, else the rebuild goes on without it and a warning says so. (It raised
    ``store_missing`` for a folder without ``zarr.json``, failing the case — and the failure was
    cached, so deleting the store changed nothing and the release shipped without the case.)"""
    from curator.pseudolabel.review_records import revised_copy_path, save_revised_copy

    if not dest.exists() or revised_copy_path(dest).exists():
        return
    try:
        old = CaseStore(dest)
        if "revised" not in old.layers():
            return
        ((array, values),) = list(old.planes("revised"))  # import writes one plane
        save_revised_copy(old, np.asarray(array[...]), values, (old.layer_attrs("revised") or {}).get("review"))
    except (CuratorError, OSError, ValueError, KeyError, RuntimeError) as e:
        if not (dest / "labels" / "revised").exists():
            return  # no person's work in the damaged store: nothing is lost by rebuilding it
        detail = e.detail if isinstance(e, CuratorError) else f"{type(e).__name__}: {e}"
        warn(InputError("revised_label_lost", f"the store being rebuilt (it was damaged) holds a revised label layer "
                        f"that cannot be read ({detail}); the rebuilt store has no revised layer",
                        path=str(dest / "labels" / "revised"),
                        remedy="import the review again (`curator review import`) from the folder the reviewers "
                        "saved their revisions in"))


def _carry_revised(dest: Path, warn: Any) -> None:
    """Rebuild the store's ``revised`` layer from the workspace's copy of the imported review
    (``curator review import``): human work no stage can redo. Nearest neighbour in physical
    space onto the new grid — identical when the grid did not change."""
    from scipy import ndimage

    from curator.pseudolabel.review_records import load_revised_copy, load_revised_review

    copy = load_revised_copy(dest)
    if copy is None:
        return
    data, affine, values = copy
    store = CaseStore(dest)
    new_geom = store.geometry
    old_geom = Geometry.from_affine(tuple(int(n) for n in data.shape), affine)
    same = old_geom.mismatch(new_geom, tol_mm=1e-3) is None
    m = np.linalg.inv(old_geom.matrix) @ new_geom.matrix  # new voxel -> world -> old voxel
    plane = data if same else ndimage.affine_transform(data, m[:3, :3], m[:3, 3], output_shape=new_geom.shape,
                                                       order=0, mode="constant", cval=0)
    review = load_revised_review(dest)  # who reviewed each label, when: kept with the layer
    store.write_layer("revised", [(plane, values)], {
        "origin": "revised", "source": "curator review import", **({"review": review} if review else {}),
        "carried_over": "same grid" if same else "resampled (nearest) when the store was rebuilt"})
    if not same:
        warn(InputError("revised_label_resampled", "the store was rebuilt on another grid: its reviewed labels "
                        "were resampled onto it (nearest neighbour)"), severity="info")


def geometry_guessed(meta: dict[str, Any]) -> str | None:
    """What an image's header lacked, so that its place in the patient is the reader's guess
    (ingest's dicom_geometry_missing, nifti_orientation_missing, orientation_missing); ``None``
    when the header states it. Kept in the store (``attrs.curator.geometry_guessed``), which
    then gets no OME-Zarr world coordinates (:mod:`curator.ome`).

    >>> geometry_guessed({"format": "itk", "world_space_missing": "no `space:` field"})
    'NRRD/MetaImage with no `space:` field'
    >>> geometry_guessed({"format": "nifti"}) is None
    True
    """
    if meta.get("geometry_missing"):
        return f"DICOM without {meta['geometry_missing']}"
    if meta.get("world_space_missing"):
        return f"NRRD/MetaImage with {meta['world_space_missing']}"
    if meta.get("orientation_missing"):
        return "NIfTI without sform or qform"
    return None


def image_fixes(image: Volume, fixes: dict[str, Any], rel: str) -> tuple[Volume, float]:
    """The dataset's declared image fixes; the intensity offset is returned, applied lazily later."""
    offset = intensity_offset(fixes, rel)
    rest = {k: v for k, v in fixes.items() if k != "intensity_offset"}
    arr = apply_array_fixes(image.array, rest, "image", rel)
    return (image if arr is image.array else Volume(arr, image.geometry, dict(image.meta))), offset


def _label(path: Path, rel: str, p: dict[str, Any], ref: Geometry | None, root: Path, key: str | None = None,
           ) -> Volume:
    """A label file (structure ``key`` of a file holding several) with its declared fixes,
    re-indexed onto ``ref`` (same voxels, any axis order)."""
    image = root / p["image_path"] if p.get("image_path") else None
    declared = p.get("declared") if p.get("encoding") != "per_structure" else None  # a scaled label: as ingest read it
    vol = apply_label_fixes(read_volume(path, role="label", grid=ref, structure=key, declared=declared,
                                        channel=p.get("image_channel")),  # a 4-D label: the image's frame
                            p["fixes"], rel, ref, image)
    return vol if ref is None else vol.on_grid(ref)


def read_label_planes(p: dict[str, Any], root: Path, geometry: Geometry | None,
                      warn: Any) -> tuple[list[Plane], Geometry | None]:
    """The case's label files as planes on the image grid (geometry of the first label if no image),
    each raw value or structure mapped to its terms (``p["terms"]``); also what ``curator export
    --grid source`` writes (:mod:`curator.export.on_source`)."""
    paths = [resolve_inside(root, root / rel) for rel in p["label_paths"]]
    if not paths:
        return [], geometry
    rels = list(p["label_paths"])
    keys = list(p["label_keys"]) if p["encoding"] == "per_structure" else [None] * len(rels)
    first = _label(paths[0], rels[0], p, geometry, root, keys[0])
    ref = geometry or first.geometry

    if p["encoding"] == "per_structure":
        def masks() -> Iterator[tuple[str, NDArray[Any]]]:
            for i, (key, path) in enumerate(zip(p["label_keys"], paths, strict=True)):
                vol = first if i == 0 else _label(path, rels[i], p, ref, root, key)
                yield key, vol.array
        return structure_planes(masks(), p["terms"]), ref
    planes: list[Plane] = []
    for i, path in enumerate(paths):
        vol = first if i == 0 else _label(path, rels[i], p, ref, root)
        got, unknown = label_map_plane(vol.array, p["terms"])
        planes += got
        unknown = [v for v in unknown if str(v) not in p.get("ignore", ())]  # declared: left out quietly
        if unknown:
            warn(InputError("label_values_undeclared", f"raw values {unknown[:12]} map to no term and are left "
                            "out of the store", path=str(path), remedy="add them to `labels.values` (or "
                            "`ignore`) in the dataset YAML; a value mapped to a name no taxonomy term resolves "
                            "(harmonize's term_unknown) maps to no term either: fix the name"))
    return planes, ref


def _median_spacings(rows: list[dict[str, Any]], codes: str) -> dict[str, tuple[float, ...]]:
    """Per dataset: the median spacing of its cases along the reoriented axes (nnU-Net's choice)."""
    by: dict[str, list[tuple[float, float, float]]] = {}
    for r in rows:
        if r.get("affine") and r.get("shape"):
            g = Geometry.from_affine(tuple(r["shape"]), r["affine"])
            by.setdefault(r["dataset"], []).append(reoriented_spacing(g, codes))
    return {d: tuple(statistics.median(s[i] for s in sp) for i in range(3)) for d, sp in by.items()}


def _row(case_id: str, p: dict[str, Any], prep: Prepared, sha: str) -> dict[str, Any]:
    g = prep.geometry
    ml = g.voxel_volume_mm3 / 1000.0
    terms = list(dict.fromkeys(t for _, values, _ in prep.planes for ts in values.values() for t in ts))
    row: dict[str, Any] = {
        "case_id": case_id, "dataset": p["dataset"], "modality": p["modality"],
        "store": f"stores/{case_id}.zarr", "store_sha256": sha, "has_image": prep.image is not None,
        "shape": list(g.shape), "spacing_mm": list(g.spacing), "affine": list(g.affine),
        "orientation": g.orientation, "resampled_shape": list(prep.resampled_shape),
        "crop_start": list(prep.crop_start), "image_dtype": str(prep.image.dtype) if prep.image is not None else None,
        "label_planes": len(prep.planes), "terms": sorted(terms),
        "body_voxels": prep.body_voxels,
        "body_volume_ml": prep.body_voxels * ml if prep.body_voxels is not None else None,
    }
    for key, col in STATS:
        row[f"intensity_{col}"] = prep.intensity.get(key) if prep.intensity else None
    for key, col in (("mean", "mean"), ("std", "std"), ("p0.5", "p00_5"), ("p99.5", "p99_5")):
        row[f"foreground_{col}"] = prep.foreground.get(key) if prep.foreground else None
    norm = prep.attrs.get("normalisation")
    if norm:
        row.update({"norm_kind": norm["kind"], "norm_clip_low": norm["clip"][0], "norm_clip_high": norm["clip"][1],
                    "norm_mean": norm["mean"], "norm_std": norm["std"], "norm_scale": norm["scale"]})
    for k, v in list(row.items()):
        if isinstance(v, (np.floating, np.integer)):
            row[k] = v.item()
    return row
