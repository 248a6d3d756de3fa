"""The README a review export writes for its reviewer (:func:`curator.pseudolabel.review.export_review`)."""

README = """Review export written by `curator review export`
=================================================

worklist.csv lists the cases, most in need of review first, with each case's terms by
attention (inconsistency + uncertainty + overlap of the model ensemble, in ml), and in
label_states each term's label as it is now: pseudo (the model's, not reviewed), or revised
(a reviewer changed it) / accepted (a reviewer accepted it) in the case's review round N.
to_review names the structures of the case still to look at (flagged, not reviewed yet): a
case reviewed in part comes back with the rest.

A structure has ONE code in every case of this folder: codes.json, labels_itksnap.txt and
labels_slicer.txt here (beside this README) hold every code of the export — load the label
descriptions once (ITK-SNAP: Segmentation > Import Label Descriptions; 3D Slicer: load
labels_slicer.txt as a colour table, then choose it for the segmentation's label map) and they
are right for every case. Each case folder holds the same files for its own structures.

For each case folder:
  preview_<term>.png  two views through the term's label: the axial slice of most attention
                      (left) and a coronal slice (right); the term's label (green: your earlier
                      revision where the case was reviewed, else the pseudo label), its
                      attention (red outline), the neighbouring structures (blue outlines);
                      case, term, slice and window written on it
  image.nii.gz        the image (physical units: HU for CT)
  pseudo.nii.gz       the pseudo labels to correct; codes.json says which term each value is
  original.nii.gz     only where the dataset ships its own label of the case: those structures
                      as the dataset drew them (harmonized to the same codes), a reference —
                      read-only, never imported; the dataset's structures are not reviewed
  codes.json, labels_itksnap.txt, labels_slicer.txt  the case's codes (those of this folder)

To review a case: open image.nii.gz with the label of worklist.csv's open_label column as
its segmentation — pseudo.nii.gz, or revised.nii.gz for a case reviewed before (see below) —
correct it painting only with the codes of codes.json (0 = background), and save the result
in the case's folder as revised.nii.gz, on the same grid (do not crop or resample) — with
Save As: an editor's Save (ITK-SNAP's Ctrl+S) writes over pseudo.nii.gz, which import does
not read as a correction (it says so; rename such a file to revised.nii.gz). Leave
codes.json and export.json as they are, and do not rename the case folders: import takes
only the case folders this export wrote. Only the labels you change become reviewed labels;
a code left exactly as exported stays a pseudo label — saving a file unchanged records nothing.

To record that labels are correct as they are, write in worklist.csv's accept column, on
the case's row: `all` (every structure of the case), or the term ids you checked separated by
`;` (e.g. `liver;spleen`). Accepted labels become reviewed labels as exported (as the file
you opened shows them), with or without a revised.nii.gz; the structures you changed in a
revised.nii.gz are taken as you saved them. A case you neither correct nor accept needs
nothing: it stays on the worklist. Keep the worklist's other columns as they are.

Then: curator review import pipeline.yaml <this folder>
Save as revised.nii.gz (revised.nii and revised.nrrd are read too; a 3D Slicer .seg.nrrd is
not: export the segmentation as a labelmap with labels_slicer.txt and save that).
A revision with values outside codes.json, or on another grid, is refused with the reason;
the other cases are imported. The dataset's own labels are not revised: where a structure
you paint covers one of them, those voxels are left out of it (the import says how many); do
not paint original.nii.gz's codes into revised.nii.gz (codes.json of the case lists what you
may paint). Re-export a case with --include-reviewed to edit it again.
If the pipeline is re-run on another voxel spacing after this export, this folder's labels are
on the old grid: export again (into a new folder) and revise there.
{reviewed}"""

README_REVIEWED = """
Cases reviewed before (worklist.csv: reviewed = True) hold their earlier revision as
revised.nii.gz, drawn over the pseudo labels left as they were: open revised.nii.gz (not
pseudo.nii.gz, which shows the pseudo labels only), correct it and save it again as
revised.nii.gz. A structure you leave as exported keeps its earlier revision. These cases:
{cases}
"""
