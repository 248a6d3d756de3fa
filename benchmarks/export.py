"""Export speed: `curator export nnunet` on real-size cases — the NIfTI writer before (nibabel's
zlib) and now (ISA-L, streamed), serial and with 2 workers, in the same run.

Cases: the cases of ``bench_cases.py`` (the TotalSegmentator CT and MR samples and three
512 × 512 × N CT volumes on real KiTS23 label grids), each ``--copies`` times under other case ids
(links to the same files), through the real pipeline into a release (as ``dataloader.py`` builds
it: ingest → harmonize → preprocess at 1 × 1 × 3 mm → release). Workers pay a start-up (a spawned
process imports curator) that many cases amortise: hence the copies.

Run:  python benchmarks/export.py [--work /tmp/bench_export] [--copies 8] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_cases import build
from benchmarks.dataloader import curator_release


def with_copies(work: Path, copies: int) -> None:
    """The benchmark's raw dataset with ``copies`` cases per original (links)."""
    folder = build(work / "raw")
    for img in sorted((folder / "imagesTr").glob("*_0000.nii.gz")):
        case = img.name[: -len("_0000.nii.gz")]
        if case == "big" or "_copy" in case:
            continue
        for k in range(1, copies):
            for src, dst in ((img, folder / "imagesTr" / f"{case}_copy{k}_0000.nii.gz"),
                             (folder / "labelsTr" / f"{case}.nii.gz", folder / "labelsTr" / f"{case}_copy{k}.nii.gz")):
                if not dst.exists():
                    dst.symlink_to(src)


def nibabel_writer(path: Path, vol: object, dtype: object = None) -> None:
    """The writer before: nibabel's own save (zlib, level 1), sform and qform code 1, atomic."""
    import nibabel as nib

    from curator.io.fsutil import atomic_path

    affine = vol.geometry.matrix  # type: ignore[attr-defined]
    img = nib.Nifti1Image(vol.array, affine)  # type: ignore[attr-defined]
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp.with_name(tmp.name + ".nii.gz")))
        tmp.with_name(tmp.name + ".nii.gz").rename(tmp)


def run(release: Path, out: Path, workers: int) -> tuple[float, int, int]:
    from curator.export import export_nnunet

    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    rep = export_nnunet(release, out, dataset_id=990, name="Bench", terms=["kidney_left", "kidney_right", "liver"],
                        partial=True, workers=workers)
    wall = time.perf_counter() - t
    size = sum(p.stat().st_size for p in out.rglob("*.nii.gz"))
    return wall, len(rep.cases), size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench_export"))
    ap.add_argument("--copies", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=2)
    a = ap.parse_args()
    import isal
    import nibabel
    import numpy

    with_copies(a.work, a.copies)
    release = curator_release(a.work)
    rows = []
    for label, workers, patch in (("nibabel zlib, serial (before)", 1, True), ("ISA-L streamed, serial", 1, False),
                                  ("ISA-L streamed, 2 workers", 2, False)):
        best = None
        for _ in range(a.repeat):
            if patch:  # the writer the exports used before this change
                with mock.patch("curator.export.common.write_nifti", nibabel_writer):
                    got = run(release, a.work / "out", workers)
            else:
                got = run(release, a.work / "out", workers)
            best = got if best is None or got[0] < best[0] else best
        assert best is not None
        rows.append((label, *best))
    base = rows[0][1]
    print(f"python {platform.python_version()}, numpy {numpy.__version__}, nibabel {nibabel.__version__}, "
          f"isal {isal.__version__}, 2 cpus; best of {a.repeat}")
    print("| writer | cases | wall s | s per case | MB written | time vs before |")
    print("|---|---|---|---|---|---|")
    for label, wall, n, size in rows:
        print(f"| {label} | {n} | {wall:.2f} | {wall / n:.2f} | {size / 1e6:.1f} | {wall / base:.2f}x |")
    print(json.dumps({r[0]: r[1] for r in rows}))


if __name__ == "__main__":
    main()
