"""``curator sources check``: a dataset YAML tried on its download before a pipeline runs it.

Whoever writes the YAML of a new dataset wants to know, in seconds and without a workspace,
whether its patterns find every case, whether the label values it declares are the ones in the
files, and what ingest will say. This runs the ingest stage's own code — layout discovery over
the whole root, then the per-case reading of a sample of cases — in a temporary workspace that
is deleted afterwards, and adds what ingest cannot see: volume files under the root that no
pattern matched (a missing ``imagesTs`` entry, a typo in a pattern), declared values no sampled
label holds (a ``declared_label_absent`` warning), how often each value occurs, and structure
files the YAML maps to a term their own name contradicts (``kidney_left: right kidney``, as
``labels check`` says).

Nothing is written beside the data or into a workspace. The output names the root's files: it
is for the person who holds them, not for a release.
"""

from __future__ import annotations

import dataclasses
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from curator.config import PipelineConfig, SourceConfig
from curator.io.formats import DICOM_EXT, ITK_EXT, NIFTI_EXT
from curator.registry import builtin_dir

# volume files: left unread, a sign that a pattern missed cases (other files — README, CSV, JSON — are only counted)
_VOLUME_SUFFIXES = (*NIFTI_EXT, *ITK_EXT, *DICOM_EXT, ".npy", ".npz", ".mat")


@dataclass
class SourceCheck:
    """What :func:`check_source` found (``to_dict()`` is the JSON the CLI prints)."""

    dataset: str
    version: str
    root: str
    encoding: str
    source: str = ""  # the source's name in a pipeline (its `name:`, else the dataset's)
    cases: int = 0
    splits: dict[str, int] = field(default_factory=dict)
    sequences: dict[str, int] = field(default_factory=dict)
    label_only: int = 0
    without_label: int = 0
    problems: list[dict[str, Any]] = field(default_factory=list)  # layout, then the sample's
    # volume files no case uses, by folder; ``read_by``: the related dataset whose layout reads them
    unmatched: list[dict[str, Any]] = field(default_factory=list)
    other_files: dict[str, int] = field(default_factory=dict)  # other unused files, by suffix
    sampled: list[dict[str, Any]] = field(default_factory=list)
    values: list[dict[str, Any]] = field(default_factory=list)  # per raw value (or structure)
    # where the stage settings the check ran under come from: a pipeline file, or "defaults"; and
    # those of them that differ from the defaults (``ingest.geometry_tolerance_mm``, ``qc.side_margin_mm``)
    settings_from: str = "defaults"
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> list[dict[str, Any]]:
        return [p for p in self.problems if p["severity"] == "error"]

    @property
    def warnings(self) -> list[dict[str, Any]]:
        return [p for p in self.problems if p["severity"] == "warning"]

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _suffix(name: str) -> str:
    low = name.lower()
    for s in (".nii.gz", ".tar.gz"):
        if low.endswith(s):
            return s
    return PurePosixPath(low).suffix or "(none)"


def _used_paths(tasks: list[Any], spec: Any) -> tuple[set[str], tuple[str, ...]]:
    """Files the cases read (and the dataset's own index, metadata and split files), and the
    folders read whole (DICOM series, slice stacks)."""
    files: set[str] = set()
    folders: list[str] = []
    for t in tasks:
        p = t.payload
        if p["image"]:
            (folders.append(p["image"].rstrip("/") + "/") if p["image_is_dir"] else files.add(p["image"]))
        for _, rel in p["labels"]:
            files.add(rel)
            folders.append(rel.rstrip("/") + "/")  # a label folder (slice stack); a file adds nothing below it
    for entry in spec.layout:
        if entry.index:
            files.add(str(entry.index))
    for extra in (spec.metadata.get("file"), spec.official_split.get("file")):
        if extra:
            files.add(str(extra))
    return files, tuple(sorted(set(folders)))


def _overlap_layouts(spec: Any, specs: Mapping[str, Any]) -> list[tuple[str, str, list[tuple[re.Pattern[str], bool]]]]:
    """``(dataset, relation, [(pattern, is a folder)])`` of the registry datasets ``spec``'s
    ``overlaps:`` names, or whose ``overlaps:`` names it: those declared to share its download or
    scans (AMOS22_MRI beside AMOS22_CT). Others are not tried — a generic ``imagesTr/{case}.nii.gz``
    of an unrelated dataset would claim any nnU-Net-style folder."""
    from curator.registry.layout import compile_pattern

    related: dict[str, str] = {}
    for ov in spec.overlaps:
        if isinstance(ov, dict) and ov.get("dataset") in specs and ov["dataset"] != spec.name:
            related.setdefault(str(ov["dataset"]), str(ov.get("relation") or "overlaps"))
    for name, other in specs.items():
        for ov in other.overlaps:
            if isinstance(ov, dict) and ov.get("dataset") == spec.name and name != spec.name:
                related.setdefault(name, str(ov.get("relation") or "overlaps"))
    out = []
    for name, relation in sorted(related.items()):
        other = specs[name]
        pats = [(compile_pattern(p, dict(other.patterns)), p.endswith("/")) for e in other.layout if not e.index
                for p in (e.image, e.label) if p]
        out.append((name, relation, pats))
    return out


def _read_elsewhere(layouts: list[tuple[str, str, list[tuple[re.Pattern[str], bool]]]], rel: str) -> str | None:
    """``"AMOS22_MRI (same_download)"`` when a related dataset's layout matches the file ``rel``."""
    for name, relation, pats in layouts:
        if any(rx.match(rel) if is_dir else rx.fullmatch(rel) for rx, is_dir in pats):
            return f"{name} ({relation})"
    return None


def _unused(root: Path, tree_files: list[str], used: set[str], folders: tuple[str, ...],
            ignored: Collection[str] = (), elsewhere: Callable[[str], str | None] | None = None,
            ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Files no case reads. Volume files are grouped by (folder, suffix) with the digits of the
    folder's path as ``#`` (``s#/segmentations/``: one row for 1,228 case folders); a folder
    of suffix-less files whose first file is DICOM counts as series files; the rest are counted
    by suffix, and the structure files the YAML ignores (``other_structures: ignore``) apart.
    ``elsewhere(file)`` names the related dataset whose layout reads a volume file (``read_by``):
    those are grouped apart and listed last, as files of the shared download, not ones missed."""
    import bisect
    import re

    from curator.errors import CuratorError
    from curator.io.confined import regular_inside
    from curator.io.formats import sniff

    volumes: dict[tuple[str, str], list[str]] = {}
    other: Counter[str] = Counter()
    unknown: dict[str, list[str]] = {}
    for f in tree_files:
        if f in used:
            continue
        i = bisect.bisect_right(folders, f) - 1  # the folder sorting just before f holds it, if any does
        if i >= 0 and f.startswith(folders[i]):
            continue
        if f in ignored:
            other["(ignored structures)"] += 1
            continue
        suffix, folder = _suffix(f), (f.rsplit("/", 1)[0] + "/" if "/" in f else "./")
        if suffix in _VOLUME_SUFFIXES:
            volumes.setdefault((folder, suffix), []).append(f)
        elif suffix == "(none)" or suffix[1:].isdigit():  # DICOM files: IM0001, 1-001, 1.2.840….123
            unknown.setdefault(folder, []).append(f)
        else:
            other[suffix] += 1
    for folder, fs in unknown.items():
        try:
            kind = sniff(regular_inside(root, root / fs[0]))  # a FIFO is never opened, a link out never read
        except CuratorError:
            kind = None
        if kind == "dicom":
            volumes[(folder, "(dicom)")] = fs
        else:
            other["(none)"] += len(fs)
    groups: dict[tuple[str, str, str], list[tuple[str, list[str]]]] = {}
    for (folder, suffix), fs in sorted(volumes.items()):
        by: dict[str, list[str]] = {}
        for f in fs:  # a DICOM series folder by its first file
            by.setdefault((elsewhere(f if suffix != "(dicom)" else fs[0]) if elsewhere else None) or "", []).append(f)
        for read_by, part in by.items():
            groups.setdefault((re.sub(r"\d+", "#", folder), suffix, read_by), []).append((folder, part))
    rows: list[dict[str, Any]] = []
    for (shape, suffix, read_by), members in groups.items():
        files = sorted(f for _, fs in members for f in fs)
        rows.append({"folder": members[0][0] if len(members) == 1 else shape, "suffix": suffix,
                     "folders": len(members), "files": len(files), "examples": files[:3], "read_by": read_by or None})
    rows.sort(key=lambda r: (r["read_by"] is not None, -r["files"]))
    return rows, dict(other.most_common())


def _rejected(spec: Any, tree: Any, used: set[str], folders: tuple[str, ...],
              layouts: list[tuple[str, str, list[tuple[re.Pattern[str], bool]]]]) -> list[dict[str, Any]]:
    """Files a layout pattern matches that a ``patterns:`` regex turns away and no case reads
    (nor a related dataset's layout: AMOS22_CT's regex leaves the MR numbers to AMOS22_MRI) —
    seen otherwise only as files no pattern matched, though the glob matches them."""
    from curator.registry.layout import PATTERN_REJECTS_REMEDY, pattern_rejections

    out = []
    for r in pattern_rejections(spec, tree):
        left = [(f, v) for f, v in r.files if f not in used and not f.startswith(folders)
                and not _read_elsewhere(layouts, f)]
        if left:
            r = dataclasses.replace(r, files=tuple(left))
            out.append({"stage": "check", "dataset": spec.name, "case_id": None, "path": f"layout[{r.entry}]",
                        "kind": "pattern_rejects", "severity": "info",
                        "message": f"{r.said()}; they were not ingested. What to do: nothing, if the regex leaves "
                                   f"them out on purpose; else {PATTERN_REJECTS_REMEDY}"})
    return out


def _ignored_structures(spec: Any, files: list[str]) -> set[str]:
    """Structure files a per-structure dataset ignores on purpose (``other_structures: ignore``:
    a TotalSegmentator subset maps its own of the 104 masks in each case folder)."""
    from curator.registry.layout import compile_pattern

    if spec.labels.encoding != "per_structure" or spec.labels.other_structures != "ignore":
        return set()
    rxs = [compile_pattern(e.label, dict(spec.patterns)) for e in spec.layout
           if e.label and not e.index and not e.label_is_dir]
    return {f for f in files if any(rx.fullmatch(f) for rx in rxs)}


def _pick(tasks: list[Any], k: int) -> list[Any]:
    """``k`` cases: the first of each kind (split, sequence, with or without label or image),
    then cases spread evenly over the sorted list."""
    if k >= len(tasks):
        return list(tasks)
    kinds: dict[tuple[Any, ...], Any] = {}
    for t in tasks:
        p = t.payload
        kinds.setdefault((p["split"], p["sequence"], bool(p["labels"]), p["image"] is None), t)
    step = (len(tasks) - 1) / max(1, k - 1)
    chosen: dict[str, Any] = {}
    for t in [*kinds.values(), *(tasks[round(i * step)] for i in range(k)), *tasks]:
        if len(chosen) >= k:
            break
        chosen.setdefault(t.case_id, t)
    return sorted(chosen.values(), key=lambda t: t.case_id)


def _file_names(root: Path, tasks: list[Any]) -> dict[str, dict[int, str]]:
    """What each sampled label file calls its values (a DICOM SEG's segment labels), by path."""
    from curator.errors import CuratorError
    from curator.io.confined import regular_inside
    from curator.io.dicom_seg import segment_labels

    out: dict[str, dict[int, str]] = {}
    for t in tasks:
        for _, rel in t.payload["labels"]:
            if rel not in out:
                try:
                    regular_inside(root, root / rel)  # read by the case already; a folder has no segment names
                except CuratorError:
                    out[rel] = {}
                    continue
                out[rel] = segment_labels(root / rel) or {}
    return {rel: names for rel, names in out.items() if names}


def _seg_disagreements(spec: Any, tax: Any, root: Path, tasks: list[Any], files: dict[str, dict[int, str]],
                       terms: dict[Any, list[str]]) -> list[dict[str, Any]]:
    """The SEG numbering warnings harmonize would give the sampled cases."""
    from curator.harmonize.stage import named_segments_disagree
    from curator.runner.stage import problem_row

    values = {int(v): ts for v, ts in terms.items()}
    out = []
    for t in tasks:
        for _, rel in t.payload["labels"]:
            for err in named_segments_disagree(root / rel, files.get(rel, {}), values, tax):
                out.append(problem_row("check", err, dataset=spec.name, case_id=t.case_id, path=f"{spec.name}:{rel}",
                                       severity="warning"))
    return out


def _label_read(result: Any) -> bool:
    """Whether a sampled case's label was read (the case did not fail, its label was not rejected)."""
    return bool(result.rows.get("cases")) and result.rows["cases"][0].get("label_status") == "ok"


def _value_rows(spec: Any, tax: Any, results: list[Any], terms: dict[Any, list[str]],
                files: dict[str, dict[int, str]]) -> list[dict[str, Any]]:
    """Per declared raw value (or structure file): its ``terms`` and the sampled cases holding it;
    then every value the sample holds that the YAML does not declare; and what the sampled
    ``files`` call each value (a DICOM SEG's segment labels), with how many files say so."""
    named: dict[int, Counter[str]] = {}
    for names in files.values():
        for v, name in names.items():
            named.setdefault(v, Counter())[name] += 1
    labelled = [r for r in results if _label_read(r)]
    seen: dict[Any, list[str]] = {}
    for r in labelled:
        case = r.rows["cases"][0]
        if spec.labels.encoding == "per_structure":
            for key in case.get("label_keys") or []:
                seen.setdefault(key, []).append(r.case_id)
        else:
            for row in r.rows.get("raw_labels", []):
                seen.setdefault(int(row["raw_value"]), []).append(r.case_id)
    declared: list[Any] = (list(spec.labels.structures) if spec.labels.encoding == "per_structure"
                           else sorted(spec.labels.declared_values() - {0}))
    ignored = set(spec.labels.ignore) if spec.labels.encoding != "per_structure" else set()
    rows = []
    for v in declared:
        rows.append({"value": v, "terms": terms.get(v, []), "declared": True, "ignored": v in ignored,
                     "cases": len(seen.get(v, [])), "of": len(labelled)})
    for v in sorted(set(seen) - set(declared), key=lambda v: (isinstance(v, str), v)):  # 2 before 10
        rows.append({"value": v, "terms": [], "declared": False, "ignored": False, "cases": len(seen[v]),
                     "of": len(labelled), "examples": sorted(set(seen[v]))[:3]})
        term = tax.resolve(v) if isinstance(v, str) else None  # a structure named in the files (ROI, segment)
        if term is not None:
            rows[-1]["suggest"] = term.id
    for r in rows:
        if isinstance(r["value"], int) and r["value"] in named:
            r["named_in_files"] = dict(named[r["value"]].most_common())
    return rows


def check_source(dataset: str, root: Path, *, registry: tuple[Path, ...] = (), sample: int | None = 5,
                 name: str | None = None, pseudonymous_ids: bool = False, workers: int = 1,
                 taxonomy: Path | None = None, pipeline: PipelineConfig | None = None) -> SourceCheck:
    """Run ingest's discovery over ``root`` and its reading over ``sample`` cases (every case
    with ``sample=None``) of ``dataset`` (a registry name or a dataset YAML's path), in a
    temporary workspace, ``workers`` cases at once (processes). The stages' settings are
    ``pipeline``'s (its ``stages.ingest`` tolerance and size limit, ``stages.qc.side_margin_mm``,
    ``stages.harmonize.taxonomy``, read as its run reads them), else the defaults; ``taxonomy``
    replaces the taxonomy either gives. Raises :class:`curator.errors.RegistryError` for an unknown name and
    :class:`curator.errors.ConfigError` for a YAML file that does not validate (with its problems)
    or a pipeline's stage settings that do not."""
    from curator.errors import ConfigError
    from curator.harmonize.mapping import raw_value_terms
    from curator.harmonize.stage import harmonize_taxonomy
    from curator.ingest.stage import IngestConfig, IngestStage
    from curator.qc.config import QCConfig
    from curator.qc.side import side_of
    from curator.registry.layout import scan
    from curator.runner.context import Context

    root = Path(root).resolve()
    with tempfile.TemporaryDirectory(prefix="curator-check-") as tmp:
        src = {"dataset": dataset, "root": root, "pseudonymous_ids": pseudonymous_ids}
        if name:
            src["name"] = name
        ctx = Context(_check_config(pipeline, Path(tmp) / "workspace", SourceConfig.from_dict(src), registry,
                                    taxonomy))
        ctx.workspace.init()  # a throw-away pseudonym key: ids made here are never shown
        sources = ctx.sources
        if not sources:  # an invalid dataset YAML: Context said why
            why = "; ".join(ctx.skipped_sources.values())  # not a `registry:` file's problem it does not use
            raise ConfigError("invalid_dataset_spec", f"{dataset} is not a valid dataset YAML: {why}",
                              remedy="fix the YAML (README, 'Adding a dataset'; `curator labels check --registry "
                                     "FILE` lists every problem)")
        source = next(iter(sources.values()))
        spec = source.spec
        config = ctx.stage_config(IngestConfig, "ingest")
        stage = IngestStage(ctx, config)
        tasks = stage.plan()
        report = SourceCheck(dataset=spec.name, version=spec.version, root=str(root), encoding=spec.labels.encoding,
                             source=source.name, problems=list(stage.extra_problems),
                             settings_from=pipeline.file_name if pipeline is not None else "defaults")
        report.cases = len(tasks)
        report.splits = dict(Counter(str(t.payload["split"]) for t in tasks).most_common())
        report.sequences = dict(Counter(t.payload["sequence"] for t in tasks if t.payload["sequence"]).most_common())
        report.label_only = sum(t.payload["image"] is None for t in tasks)
        report.without_label = sum(not t.payload["labels"] for t in tasks)
        used, folders = _used_paths(tasks, spec)
        # the files an `overrides: true` entry replaced: said by their case_overridden rows, not missed
        used |= {p["path"].split(":", 1)[1] for p in stage.extra_problems
                 if p["kind"] == "case_overridden" and p["path"] and ":" in p["path"]}
        tree = scan(root, spec.exclude)
        readable = [f for f in tree.files if f not in tree.broken]  # a link out of the root is never read
        layouts = _overlap_layouts(spec, ctx.registry.datasets)
        report.unmatched, report.other_files = _unused(root, readable, used, folders,
                                                       _ignored_structures(spec, tree.files),
                                                       (lambda f: _read_elsewhere(layouts, f)) if layouts else None)
        if tasks:  # with no case at all, discover's layout_no_match says so
            report.problems += _rejected(spec, tree, used, folders, layouts)
        broken = sum(f not in used for f in tree.broken)
        if broken:
            report.other_files["(broken links)"] = broken
        picked = tasks if sample is None else _pick(tasks, max(0, sample))
        tax = harmonize_taxonomy(ctx)
        terms = raw_value_terms(spec, tax, include_derived=False)
        qc = ctx.stage_config(QCConfig, "qc")
        margin = qc.side_margin_mm if ctx.stage_enabled("qc") else None  # a run without qc excludes no side
        report.settings = _settings_used(ctx, config, qc)
        if margin is not None and any(side_of(t, tax)[0] for ts in terms.values() for t in ts):
            # where each value lies: left/right labels on the patient's other side (qc's test, hours earlier)
            picked = [dataclasses.replace(t, payload={**t.payload, "centroids": True}) for t in picked]
        # each of the processes below may hold a case at once: each allows 1/(4 × workers) of the memory
        env = dataclasses.replace(ctx.case_env(), workers=max(1, min(workers, len(picked))))
        args = (IngestStage.ref(), "", config.to_dict(), env)
        if workers > 1 and len(picked) > 1:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=min(workers, len(picked))) as pool:
                results = list(pool.map(_read_case, picked, [args] * len(picked)))
        else:
            results = [_read_case(t, args) for t in picked]
        # what the files name their values, of the cases whose label was read (as "in sampled labels")
        read = [t for t, r in zip(picked, results, strict=True) if _label_read(r)]
        files = _file_names(root, read) if spec.labels.encoding == "label_map" else {}
        if files:  # a SEG numbering its segments otherwise than the YAML: what harmonize would warn
            report.problems += _seg_disagreements(spec, tax, root, read, files, terms)
    for r in results:
        report.problems += r.problems
        report.sampled.append(_sampled_row(r))
    report.values = _value_rows(spec, tax, results, terms, files)
    report.problems += _declared_absent(spec, report, len(picked) < len(tasks))
    report.problems += _undeclared_structures(spec, report.source, results, report.values)
    report.problems += _unresolved(spec, tax, report.values) + _pattern_hints(spec, report)
    report.problems += _patient_timepoints(spec, tasks)
    report.problems += _names_disagree(spec, tax)
    if margin is not None:
        report.problems += _sides_swapped(spec, tax, results, terms, margin)
    if not pseudonymous_ids and Path(spec.path).parent.resolve() != builtin_dir().resolve():
        report.problems += _identifying_paths(spec.name, tasks)
    return report


def _check_config(pipeline: PipelineConfig | None, workspace: Path, source: SourceConfig,
                  registry: tuple[Path, ...], taxonomy: Path | None) -> PipelineConfig:
    """The throw-away pipeline the check runs: ``pipeline``'s stage settings (its folder too, which
    their relative paths are relative to, and its file, which messages name), else the defaults;
    one source, a temporary workspace, the default executor (the check reads its cases itself)."""
    from curator.config import ExecutorConfig, ReleaseConfig

    base = pipeline if pipeline is not None else PipelineConfig()
    stages = dict(base.stages)
    if taxonomy:  # names resolve as in the run, through the file given instead
        stages["harmonize"] = {**base.stage("harmonize"), "taxonomy": str(Path(taxonomy).resolve())}
    return base.replace(workspace=workspace, sources=(source,), registry=tuple(registry), stages=stages,
                        executor=ExecutorConfig(), release=ReleaseConfig())


def _settings_used(ctx: Any, ingest: Any, qc: Any) -> dict[str, Any]:
    """``{"stage.setting": value}`` of the settings the check reads that differ from their defaults:
    ingest's (its tolerance and size limit; not ``enabled`` or ``on_bad_case``: every sampled case
    is read and said), qc's side margin (off with qc), the taxonomy harmonize names terms with."""
    from curator.harmonize.stage import taxonomy_path
    from curator.qc.config import QCConfig

    default = type(ingest)().to_dict()
    out = {f"ingest.{k}": v for k, v in ingest.to_dict().items()
           if k not in ("enabled", "on_bad_case") and v != default.get(k)}
    if not ctx.stage_enabled("qc"):
        out["qc.enabled"] = False
    elif qc.side_margin_mm != QCConfig().side_margin_mm:
        out["qc.side_margin_mm"] = qc.side_margin_mm
    tax = taxonomy_path(ctx)
    if tax:
        out["harmonize.taxonomy"] = tax
    return out


# a date (2001-09-11, 20010911, TCIA's 09-11-2001), a DICOM person name (DOE^JANE) or a record number
_IDENTIFYING_PART = re.compile(r"(?<!\d)(?:(?:19|20)\d\d[-_.]?[01]\d[-_.]?[0-3]\d|[01]\d[-_.][0-3]\d[-_.](?:19|20)\d\d)"
                               r"(?!\d)|[A-Za-z]\^[A-Za-z]|(?<![A-Za-z])MRN", re.IGNORECASE)


def _identifying_paths(dataset: str, tasks: list[Any]) -> list[dict[str, Any]]:
    """A source with public ids publishes its file paths as they are (``cases.image_path``):
    a hospital export's folders (TCIA-style ``09-11-2001-DOE JANE-CT ABD``) can hold dates of
    service, names or record numbers. Said once, with one example, for a dataset YAML of one's own."""
    files = [rel for t in tasks for rel in [t.payload["image"], *(p for _, p in t.payload["labels"])] if rel]
    hits = list(dict.fromkeys(part for rel in files for part in PurePosixPath(rel).parts
                              if _IDENTIFYING_PART.search(part)))
    if not hits:
        return []
    return [{"stage": "check", "dataset": dataset, "case_id": None, "path": "layout", "kind": "paths_may_identify",
             "severity": "warning", "message": f"{len(hits)} file or folder name(s) look like a date, a person's name "
             f"or a record number (e.g. {hits[0]!r}); a release publishes the paths of a source with public ids as "
             "they are. What to do: nothing, for a public download (TCIA's folders hold shifted dates); for files "
             "from patients' records, give the source `pseudonymous_ids: true` in pipeline.yaml"}]


def _read_case(task: Any, args: tuple[Any, ...]) -> Any:
    """Ingest's reading of one case (a module-level function: a process pool pickles it)."""
    from curator.runner.stage import execute

    ref, key, config, env = args
    return execute(ref, task, key, config, env)


def _undeclared_structures(spec: Any, source: str, results: list[Any],
                           values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A warning per sampled case holding structure files ``labels.structures`` does not declare
    (harmonize maps them to no term: ``label_unmapped``), as an undeclared value of a label map is
    ``label_values_undeclared``; the values table's ``NO:`` alone left the summary at 0 warnings."""
    if spec.labels.encoding != "per_structure":
        return []
    declared = set(spec.labels.structures)
    suggest = {v["value"]: v["suggest"] for v in values if "suggest" in v}
    out = []
    for r in results:
        case = (r.rows.get("cases") or [{}])[0]
        keys, paths = case.get("label_keys") or [], case.get("label_paths") or []
        extra = [(k, rel) for k, rel in zip(keys, paths, strict=False) if k not in declared]
        if not extra:
            continue
        names = sorted({k for k, _ in extra})
        hints = [f"{k} (a term: {suggest[k]})" if k in suggest else k for k in names]
        out.append({"stage": "check", "dataset": spec.name, "case_id": r.case_id, "path": f"{source}:{extra[0][1]}",
                    "kind": "label_unmapped", "severity": "warning",
                    "message": f"{len(names)} structure file(s) the dataset YAML does not declare: "
                               f"{', '.join(hints[:10])}" + (f" and {len(hints) - 10} more" if len(hints) > 10 else "")
                               + "; harmonize maps them to no term and leaves them out (label_unmapped). What to do: "
                               "map them in `labels.structures` ({file stem: term}), or set `labels.other_structures: "
                               "ignore` to read only the declared files"})
    return out


def _declared_absent(spec: Any, r: SourceCheck, sampled: bool) -> list[dict[str, Any]]:
    """A row per term ``labels.values`` declares whose values no label read holds (the values
    table's ``0 of N``), naming the undeclared values they hold instead: an error when most of them
    hold one (the wrong code, which harmonize leaves out of the dataset's labels), else a warning.
    The row's path names the YAML's file and key. A declared structure file no case has is said by
    discovery, over every case."""
    from curator.harmonize.mapping import declared_values_absent
    from curator.runner.stage import problem_row

    read = {v["of"] for v in r.values}
    held = {v["value"]: v["cases"] for v in r.values if isinstance(v["value"], int)}
    hint = ("; the check read a sample: `--all` reads every case (a rare value may be in none of the sample)"
            if sampled else "")
    return [problem_row("check", a.error, dataset=spec.name, case_id=None, path=f"{spec.file_name}:{a.loc}",
                        severity="error" if a.wrong_code else "warning")
            for a in declared_values_absent(spec, held, max(read, default=0),
                                            whose="of the sample" if sampled else "read", fix_hint=hint)]


def _pattern_hints(spec: Any, r: SourceCheck) -> list[dict[str, Any]]:
    """Ingest takes labels without images for label-only cases, and images without labels for
    unlabelled ones; when every case is so, a pattern more likely matches nothing by mistake."""
    def row(kind: str, severity: str, message: str) -> dict[str, Any]:
        return {"stage": "check", "dataset": spec.name, "case_id": None, "path": "layout", "kind": kind,
                "severity": severity, "message": message}

    out = []
    images = [e.image for e in spec.layout if e.image]
    labels = [e.label for e in spec.layout if e.label]
    if r.cases and r.label_only == r.cases and images:
        out.append(row("image_pattern_no_match", "warning", f"no file matches the image pattern(s) {images}: all "
                       f"{r.cases} case(s) are label-only. What to do: nothing, if the download holds labels alone "
                       "(KiTS23's repository before its imaging script ran); else check the pattern against the "
                       "files (the table of files no pattern matched lists them)"))
    ambiguous = any(p["kind"] == "label_ambiguous" for p in r.problems)  # its labels' real cause, said already
    if r.cases and r.without_label == r.cases and labels and not ambiguous:
        out.append(row("label_pattern_no_match", "warning", f"no file matches the label pattern(s) {labels}: no "
                       f"case has a label. What to do: check the pattern against the files, or drop `label:` "
                       "for a dataset without labels"))
    return out


def _patient_timepoints(spec: Any, tasks: list[Any]) -> list[dict[str, Any]]:
    """A warning when ``patient_id`` is the case id and the case ids read as subject and timepoint
    (BraTS' ``BraTS-MEN-00008-000`` beside ``-001``: :func:`~curator.registry.scaffold_patients.timepoint_subjects`):
    each timepoint is then a patient of its own, and the splits may put one subject on both sides."""
    from curator.registry.scaffold_patients import same_subject, subject_regex, timepoint_subjects

    if spec.patient_id != "{case}":
        return []
    ids = sorted({str(t.payload["source_case"]) for t in tasks if t.payload.get("source_case")})
    subjects = timepoint_subjects(ids)
    if subjects is None:
        return []
    several = sum(len(tps) > 1 for tps in subjects.values())
    rx = subject_regex(ids) or "(?P<subject>...)-(?P<timepoint>...)"
    loc = "patient_id"
    return [{"stage": "check", "dataset": spec.name, "case_id": None, "path": f"{spec.file_name}:{loc}",
             "kind": "patient_id_timepoints", "severity": "warning",
             "message": f"{several} of the {len(subjects)} subject(s) the case ids name have several of them "
                        f"({', '.join(same_subject(ids))}), but patient_id is '{{case}}'"
                        f"{spec.line_note(loc)}: each case is a patient of its own, so a split can put one subject's "
                        "timepoints on both sides. What to do: if the trailing number is a timepoint or study of one "
                        f"subject, give {{case}} named groups and name the patient by the subject — `patterns: "
                        f"{{case: '{rx}'}}` and `patient_id: '{{subject}}'`; nothing, if each id is a patient"}]


def _unresolved(spec: Any, tax: Any, values: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A declared value or structure whose name is no taxonomy term: harmonize would drop it."""
    out = []
    for v in values:
        if not v["declared"] or v["ignored"] or v["terms"]:
            continue
        part = "structures" if spec.labels.encoding == "per_structure" else "values"
        names = getattr(spec.labels, part)[v["value"]]
        close = sorted({t.name for n in names for t in tax.suggest(n)})[:5]
        loc = f"labels.{part}.{v['value']}"
        out.append({"stage": "check", "dataset": spec.name, "case_id": None, "path": f"{spec.file_name}:{loc}",
                    "kind": "term_unknown", "severity": "error",
                    "message": f"{', '.join(map(repr, names))} is no taxonomy term" + (f" (close: {', '.join(close)})"
                               if close else "") + spec.line_note(loc) + ". What to do: use a term's name or synonym (`curator labels "
                               "resolve NAME`), or " + ("leave the file out of `structures` with `other_structures: "
                               "ignore`" if spec.labels.encoding == "per_structure" else "list the value under `ignore`")})
    return out


def _names_disagree(spec: Any, tax: Any) -> list[dict[str, Any]]:
    """The structure files whose own name is a term unrelated to the one the YAML maps them to
    (``kidney_left: right kidney``): what ``labels check`` and harmonize warn."""
    from curator.harmonize.mapping import STRUCTURE_NAME_REMEDY, structure_names_disagree

    return [{"stage": "check", "dataset": spec.name, "case_id": None, "path": i.loc, "kind": i.kind,
             "severity": "warning", "message": f"{i.message}. What to do: {STRUCTURE_NAME_REMEDY}"}
            for i in structure_names_disagree(spec, tax)]


def _sides_swapped(spec: Any, tax: Any, results: list[Any], terms: dict[Any, list[str]],
                   margin_mm: float) -> list[dict[str, Any]]:
    """qc's ``sides_swapped`` test (:func:`curator.qc.side.swapped_datasets`) on the sampled
    labels: most left/right labels on the patient's other side of their partner — a label map
    written as seen on screen (``2: left kidney`` for the patient's right one), or a flipped
    header. qc found it only after ingest, dedup, harmonize and preprocess had run."""
    from curator.qc.side import check_sides, swapped_datasets

    rows: list[dict[str, Any]] = []
    orientations: dict[str, str | None] = {}
    for r in results:
        if not _label_read(r):
            continue
        orientations[r.case_id] = r.rows["cases"][0].get("orientation")
        at: dict[str, tuple[Any, int]] = {}  # term -> (voxel-weighted sum of centroids, voxels)
        for c in r.rows.get("label_centroids", []):
            key = c["label_key"] if spec.labels.encoding == "per_structure" else c["raw_value"]
            for tid in terms.get(key, []):
                s, n = at.get(tid, (0.0, 0))
                at[tid] = (s + c["voxels"] * np.asarray(c["centroid_mm"]), n + c["voxels"])
        rows += [{"dataset": spec.name, "case_id": r.case_id, "origin": "original", "term_id": tid,
                  "centroid_mm": [float(x) for x in s / n]} for tid, (s, n) in at.items() if n]
    where = f"{spec.file_name}:labels." + ("structures" if spec.labels.encoding == "per_structure" else "values")
    found = swapped_datasets(check_sides(rows, margin_mm, tax), orientations=orientations, margin_mm=margin_mm,
                             excluded="qc would exclude them", tax=tax)
    return [{"stage": "check", "dataset": spec.name, "case_id": None, "path": where, "kind": err.kind,
             "severity": "warning", "message": f"{err.detail}. What to do: {err.remedy}"} for _, err in found]


def _sampled_row(r: Any) -> dict[str, Any]:
    case = (r.rows.get("cases") or [{}])[0]
    out = {"case_id": r.case_id, "ok": not r.failed, "seconds": round(r.seconds, 3)}
    for k in ("official_split", "sequence", "format", "shape", "spacing_mm", "orientation", "dtype",
              "intensity_min", "intensity_max", "label_status", "label_values", "label_keys"):
        if k in case:
            out[k] = case[k]
    out["problems"] = dict(Counter(p["kind"] for p in r.problems))  # kind -> times: each kind once per case
    return out
