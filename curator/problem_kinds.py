"""The catalogue of problem kinds: what each ``problems.kind`` means and its default remedy.

Every kind a ``problems`` row can have is listed here (``tests/hardening/test_bad_inputs.py``
checks that each kind raised somewhere is), so the problems table stays interpretable; the
errors themselves are :mod:`curator.errors`.

>>> PROBLEM_KINDS["file_not_found"].meaning
'a file the layout points to does not exist'
>>> remedy_for("no_such_kind")
'inspect the file named in this row'
>>> PROBLEM_KINDS["ct_intensity_offset"].scan, PROBLEM_KINDS["label_values_undeclared"].scan
(True, False)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ProblemKind:
    """A documented problem kind: what it means and the default remedy."""

    kind: str
    meaning: str
    remedy: str
    # the kind says something about a scan itself — its file, voxels or header (a CT stored +1024,
    # a header without orientation, a series with a gap) — rather than about its labels, its
    # layout or the run: what dedup's keep criterion `clean` counts, for rows naming the image
    scan: bool = False


# The catalogue of problem kinds curator reports. Tests check that every kind raised
# somewhere is documented here, so the problems table stays interpretable.
_NEW_KEY = ("restore secret/pseudonym.key from a backup of the workspace; to go on with a new key on purpose (every "
            "patient_id and study_key in later releases changes), write one: python -c \"import secrets; "
            "print(secrets.token_hex(32))\" > <workspace>/secret/pseudonym.key")
_KINDS: list[ProblemKind] = [
    ProblemKind("file_not_found", "a file the layout points to does not exist",
                "check the source root in pipeline.yaml and that the download is complete"),
    ProblemKind("empty_file", "the file has zero bytes",
                "download the file again; the copy on disk is empty", scan=True),
    ProblemKind("truncated_file", "the file ends before its data does (e.g. a cut gzip stream)",
                "download the file again and compare its checksum with the source", scan=True),
    ProblemKind("corrupt_file", "the file's bytes do not decode as its format",
                "download the file again; if it persists, report it to the dataset's maintainers", scan=True),
    ProblemKind("unknown_format", "the file's extension or content is not a supported format",
                "convert it to NIfTI, NRRD, MHA/MHD or DICOM, or fix the layout pattern", scan=True),
    ProblemKind("wrong_extension", "the file's content does not match its extension",
                "rename the file to match its real format or re-export it", scan=True),
    ProblemKind("not_a_regular_file", "the path is a FIFO, socket or device (or a folder where a file is expected), "
                "not a file; curator never opens it",
                "replace it with the real file"),
    ProblemKind("file_too_large", "a metadata, split or index file of the dataset is larger than curator reads "
                "(256 MiB): no table of cases is that large, so it is damaged, not the dataset's own, or a link "
                "to something endless",
                "check the file and replace it with the dataset's real one"),
    ProblemKind("permission_denied", "the file cannot be opened for reading",
                "make the file readable by the user running curator"),
    ProblemKind("symlink_loop", "a symbolic link points back into itself",
                "remove or fix the symbolic link in the source folder"),
    ProblemKind("path_escape", "a layout pattern or a symbolic link (to a file or a case folder, or the "
                "metadata, split or index file) leads outside the source root, or a file of a DICOM series or slice "
                "folder links outside that folder; links out are refused on purpose, so only files under the root "
                "are read",
                "point the source's `root:` in pipeline.yaml at the folder the links lead to (a root that is itself "
                "a link is fine), or copy the files into the source folder; keep layout patterns relative to the "
                "root, without '..' (docs/registry.md, 'The source root')"),
    ProblemKind("not_3d", "the image is not a 3-D volume (e.g. 4-D or 2-D)",
                "declare the channels or sequences of 4-D images in the dataset YAML, or drop the file; a 4-D "
                "label map is split only with its 4-D image (as many frames as the image's declared channels), "
                "else split it into 3-D files", scan=True),
    ProblemKind("empty_volume", "the volume has a dimension of length 0 (no voxels at all)",
                "download the file again; the export wrote no data", scan=True),
    ProblemKind("unsupported_dtype", "the voxels are not numbers curator can use: RGB/colour or other "
                "structured types, complex numbers",
                "convert the image to one grey-level channel (a label map to integer codes) and re-export", scan=True),
    ProblemKind("blank_image", "every voxel of the image holds the same value",
                "the pixel data was stripped or never written; download the image again", scan=True),
    ProblemKind("non_finite_values", "the image holds NaN or infinite voxels",
                "re-export the image; if the NaN/Inf only mark voxels without data (outside a registered field "
                "of view), declare `fixes: {non_finite: {value: ..., when: ...}}` in the dataset YAML", scan=True),
    ProblemKind("non_finite_replaced", "NaN or infinite image voxels were set to the value the dataset YAML's "
                "`fixes.non_finite` declares (info: the row counts them)",
                "nothing, if they mark voxels without data; if many voxels inside the body were replaced, "
                "re-export the image instead", scan=True),
    ProblemKind("invalid_spacing", "a voxel spacing is zero, negative or not finite",
                "fix the header's pixdim/spacing or declare a spacing fix in the dataset YAML", scan=True),
    ProblemKind("implausible_spacing", "a voxel spacing is below 0.01 mm or above 50 mm: the header's "
                "units are not millimetres (NIfTI units in metres/microns are converted), or it is wrong",
                "fix the spacing (and its units) in the header, or declare a spacing fix in the dataset YAML", scan=True),
    ProblemKind("bad_direction", "the direction cosines are not orthonormal",
                "fix the header's orientation (qform/sform) or resample the file", scan=True),
    ProblemKind("header_size_mismatch", "the header's shape and data type disagree with the voxel data: it claims "
                "more than the file holds, or less (the voxels would be wrapped onto the wrong grid)",
                "download the file again; the header and data disagree", scan=True),
    ProblemKind("shape_mismatch", "image and label have different array shapes",
                "check that the label belongs to this image, or resample it onto the image grid"),
    ProblemKind("geometry_mismatch", "image and label share a shape but not spacing/origin/direction",
                "check the label's header; if the dataset stores its labels with a wrong or empty header, declare "
                "`fixes: {label_geometry: {from: image}}` (+ `label_flip` when its array runs another way) in the dataset YAML"),
    ProblemKind("label_reoriented", "the label covers the image's voxels with axes permuted or flipped",
                "nothing to do; later stages re-index the label onto the image grid"),
    ProblemKind("label_not_integer", "a label map has non-integer values",
                "labels must hold integer codes; re-export the label map"),
    ProblemKind("dicom_duplicate_slices", "files of a DICOM series that are byte-for-byte copies of another of its "
                "slices (a repeated download's 'IM0005 (1).dcm') were left out, each said by its rank (info)",
                "nothing; delete the copies to silence it"),
    ProblemKind("label_frame_unannotated", "the frame of a 4-D label map a case reads (its image's channel) "
                "holds only background: the frame was not annotated (cine masks annotate ED and ES), so the case "
                "is ingested without labels (info)",
                "nothing; to train on the annotated frames only, query cases with has_label"),
    ProblemKind("phase_file_malformed", "the file the dataset YAML's `phase:` reads a case's cardiac phase from "
                "(ACDC's Info.cfg) cannot be parsed: a line that is no `key: value`, an ED/ES value that is no frame "
                "number, no ED or ES line, or one frame for both; the row names the file and the line, and the "
                "case is ingested with cases.phase null",
                "check the file against the dataset's download (lines `ED: 1`, `ES: 12`) and download the case "
                "again if it differs"),
    ProblemKind("phase_unmatched", "a case's frame is none of the frames its phase file names (or its `phase:` "
                "placeholder is not ED or ES): the case is ingested with cases.phase null",
                "check that the frame's file and the phase file belong together, or narrow the layout's patterns"),
    ProblemKind("label_scaling_ignored", "a NIfTI label's header scales its integer codes by whole numbers "
                "(scl_slope/scl_inter: an image's header copied onto the label, e.g. dcm2niix's CT intercept "
                "-1024); the label was read as its stored codes, and the row gives both value sets",
                "nothing if labels.values declares the stored codes; re-save the label with scl_slope 1, "
                "scl_inter 0 to silence it"),
    ProblemKind("label_scaling_applied", "a NIfTI label's header scales its integer codes by whole numbers and "
                "the dataset YAML declares more of the scaled values than of the stored codes, so the scaled "
                "values were read; the row gives both value sets",
                "check that labels.values was written for this file; re-save the label with scl_slope 1, "
                "scl_inter 0 and declare its stored codes"),
    ProblemKind("label_values_undeclared", "a label map holds values the dataset YAML does not declare",
                "add the values to `labels.values` in the dataset YAML, or mark them `ignore`"),
    ProblemKind("image_values_clipped", "a float image holds values more than 1024 times beyond the rest "
                "(a fill value such as -3.4e38); they were set to the edge of the image's range",
                "nothing, if they are padding outside the field of view; otherwise check the image", scan=True),
    ProblemKind("interpolation_clipped", "cubic (B-spline) resampling overshot the integer store's range next to "
                "a very bright or dark structure (metal); those voxels were set to the range's limit",
                "nothing if they lie in metal or padding; image_interpolation: linear stays inside the source's range"),
    ProblemKind("body_mask_empty", "no voxel of the image is above the body threshold: no body crop, body volume "
                "or statistics inside the body for the case",
                "check the image's values (a CT not in HU needs fixes.intensity_offset)"),
    ProblemKind("body_mask_whole_field", "the body mask covers 99 % or more of the field of view: the image is "
                "cropped to the patient, or the threshold fell in the background",
                "nothing if the image holds no air; otherwise check its background or a CT's intensity offset"),
    ProblemKind("normalisation_no_contrast", "the intensity window (ct_clip, pet_clip or the percentiles) clips 99 % "
                "or more of the body's voxels to one bound: the normalised network input is (nearly) constant "
                "(a PET in Bq/mL under a pet_clip in SUV became all zeros)",
                "give the window in the image's units (pet_clip: SUV vs Bq/mL), use pet_percentiles, or check the "
                "image (a CT not in HU needs fixes.intensity_offset)"),
    ProblemKind("label_lost_in_resampling", "a structure has voxels in the source but none on the stored grid "
                "(thinner than the target spacing); the store leaves it out, so it is unknown for the case",
                "resample finer (stages.preprocess.target_spacing_mm, or spacing: median)"),
    ProblemKind("label_is_image", "the label file looks like an intensity image, not a label map",
                "check the layout pattern: the label pattern matches image files"),
    ProblemKind("label_unmapped", "a raw label value or structure file maps to no taxonomy term",
                "map it in the dataset YAML's `labels.values` (a raw value) or `labels.structures` (a structure "
                "file); a value that is no label goes under `labels.ignore`, structure files to leave out "
                "under `labels.other_structures: ignore`"),
    ProblemKind("declared_label_absent", "a structure file stem `labels.structures` declares is held by no case of "
                "the dataset (a misspelt stem: `kidney_lft` for kidney_left.nii.gz): its term is annotated in no case; "
                "or no label holds a raw value `labels.values` declares (`sources check`: no sampled label; harmonize: "
                "no label of the dataset) while they hold undeclared values. When most labels hold one of them (the "
                "wrong code, `2: prostate` over files coding it 1) it is an error and harmonize leaves the term out "
                "of the dataset's cases (not annotated) rather than publish it annotated and absent in every case; "
                "otherwise a warning, the term annotated as the YAML declares. The row's path is the YAML's file "
                "and key (`Mine.yaml:labels.values.2`), its message ends with the key's line",
                "fix the key in the dataset YAML (the row names a close file stem, or the undeclared values the labels "
                "hold instead) and re-run; remove it if the dataset truly has no such structure or value"),
    ProblemKind("structure_name_disagrees", "a structure file's own name is a term unrelated to the term the "
                "dataset YAML maps it to (kidney_left mapped to the right kidney)",
                "check `labels.structures` in the dataset YAML against the dataset's documentation"),
    ProblemKind("term_unknown", "a dataset YAML names a label term the taxonomy does not know",
                "fix the name in the dataset YAML (`curator labels resolve NAME`), or add the term or name to a "
                "taxonomy of your own (a file with `extends: curator`, given as `stages.harmonize.taxonomy`)"),
    ProblemKind("annotates_unmapped", "a dataset YAML says a term is annotated (`annotates`, or "
                "`labels.annotated_by_any_file`) but no raw value or structure file maps to it (for "
                "`annotated_by_any_file`: fewer than two files do): the setting is left out",
                "map a raw value or structure file to the term in `labels.values` / `labels.structures`, or take "
                "the term out of `annotates` / `labels.annotated_by_any_file`"),
    ProblemKind("term_incomplete", "a term made of several structure files (its parts: TotalSegmentator v2's sacrum "
                "is sacrum.nii.gz and vertebrae_S1.nii.gz) lacks some of them in the case, missing or dropped by "
                "ingest: it counts as not annotated there (no labels row)",
                "replace the missing or dropped file and re-run; files that are alternatives (one reader's mask "
                "each) go under `labels.annotated_by_any_file` in the dataset YAML"),
    ProblemKind("label_rejected", "ingest rejected the case's label: harmonize gives it no labels rows and "
                "preprocess stores the image without labels",
                "fix the label file (see the ingest problem of this case) and re-run"),
    ProblemKind("revised_label_resampled", "preprocess rebuilt a store on another grid and resampled its "
                "reviewed labels onto it (nearest neighbour)", "nothing to do; re-review the case if its labels "
                "are thin"),
    ProblemKind("revised_label_lost", "the labels table lists a reviewed label the case's store does not hold "
                "(the store was rebuilt without the workspace's copy of the review)",
                "run `curator review import` on the review folder again, then release again"),
    ProblemKind("ensemble_not_applicable", "no model of the pseudolabel ensemble runs on any case of the workspace "
                "(the models' `modalities:` name none of the cases' modalities): no case gets pseudo labels, and an "
                "earlier ensemble's are removed", "use models trained for the cases' modality, or correct the "
                "models' `modalities:` in the ensemble file (left out: the model runs on every case)"),
    ProblemKind("attention_outdated", "a case's pseudolabel attention map is missing or in an older format",
                "run the pseudolabel stage again (it re-infers the case)"),
    ProblemKind("nifti_qform_sform", "a NIfTI header sets a qform and an sform that place the volume apart; "
                "curator uses the sform, ITK-based tools the qform unless the sform code is 1 (scanner)",
                "overlay the label to see which one is right; re-save the file with one affine", scan=True),
    ProblemKind("nifti_orientation_missing", "a NIfTI header sets neither an sform nor a qform: nibabel reads "
                "it as LAS, ITK as LPS, the NIfTI standard as RAS, so the patient's left and right are a guess",
                "find the orientation in the dataset's documentation and re-save the file with an sform, or leave "
                "the case out", scan=True),
    ProblemKind("orientation_missing", "a NRRD or MetaImage header names no patient orientation (a NRRD without "
                "an anatomical `space` or `space directions`, e.g. only `spacings`, `space dimension` or "
                "`space: scanner-xyz`; a MetaImage without a TransformMatrix): read as LPS axes (as ITK does) at the "
                "stated origin, 0 when none, so the patient's left and right are a guess",
                "find the orientation in the dataset's documentation and re-save the file with it, or leave the case "
                "out", scan=True),
    ProblemKind("dicom_geometry_missing", "a DICOM object gives no pixel spacing, orientation or position "
                "(neither at its top level nor in its functional groups): read as 1 mm voxels, identity "
                "orientation", "find the voxel size in the dataset's documentation and re-export the scan with it, "
                "or leave the case out", scan=True),
    ProblemKind("label_empty", "the label map holds only background",
                "nothing to do if the case truly has no annotated structure; otherwise re-export"),
    ProblemKind("ct_intensity_offset", "a CT's low end is far above air (-1000 HU): it was stored with an "
                "offset (e.g. +1024) that preprocess's HU window would clip",
                "declare `fixes: {intensity_offset: {value: -1024, when: ...}}` in the dataset YAML "
                "(docs/registry.md, `fixes`)", scan=True),
    ProblemKind("ct_intensity_clipped", "a CT's intensities are clipped to a narrow window (its floor far above "
                "air): no offset fix applies", "use the original scan in Hounsfield units if it exists", scan=True),
    ProblemKind("mr_looks_like_ct", "an image declared MR or PET holds a CT's air: at least 5 % of its voxels "
                "lie at -1100..-900, Hounsfield units' air, which an MR's or PET's intensities (near 0 and above) do "
                "not reach; preprocess would normalise it as an MR or PET instead of windowing it in HU",
                "if the scans are CTs, set `modality: CT` in the dataset YAML (or on the layout entry, or the "
                "sequence's modality under `sequences:`)"),
    ProblemKind("ct_intensity_8bit", "every value of a CT lies in 0..255: an 8-bit (windowed) export, "
                "not Hounsfield units", "use the original scan in Hounsfield units", scan=True),
    ProblemKind("override_unmatched", "a qc override names a (case, term) label the qc table does not have, or a "
                "dedup `keep` override a case in no duplicate group",
                "check the case id and term id of the override against the qc table; remove a dedup keep row whose "
                "case has no copy (or add a `same` row for the copy dedup missed)"),
    ProblemKind("override_overruled", "a qc override includes a label a part of which qc excluded (same case and "
                "layer), so the release excludes it all the same: the label holds the excluded part",
                "include the excluded part too (an override row) if it is right, or drop the include row"),
    ProblemKind("image_missing", "a label exists but its image does not (ingested as label-only)",
                "download the images if they exist; label-only cases are kept for label statistics"),
    ProblemKind("dicom_no_pixel_data", "a DICOM file has no pixel data",
                "remove non-image DICOM objects (SR, PR, SEG) from the series folder", scan=True),
    ProblemKind("dicom_multiple_series", "one folder mixes several DICOM series",
                "split the folder by SeriesInstanceUID (one folder per series) or narrow the layout pattern", scan=True),
    ProblemKind("dicom_missing_slice", "a DICOM series has a gap in its slice positions",
                "download the series again; a slice is missing", scan=True),
    ProblemKind("dicom_uneven_spacing", "a DICOM series' slices are not evenly spaced",
                "resample the series or accept it with `allow_uneven_spacing: true`", scan=True),
    ProblemKind("dicom_gantry_tilt", "a DICOM series' slice positions move within the slice plane "
                "(gantry tilt or shear): no voxel grid describes it",
                "resample it with a tilt correction (dcm2niix corrects CT gantry tilt) and ingest the "
                "result, or exclude the series", scan=True),
    ProblemKind("dicom_inconsistent", "the slices of a DICOM series disagree on size, orientation or "
                "pixel spacing, or lack their position",
                "check that the folder holds one series of one acquisition", scan=True),
    ProblemKind("too_large", "the volume exceeds the configured voxel limit, or would take more than a quarter "
                "of the machine's memory divided by the number of workers",
                "raise `max_voxels` in the ingest settings if the file is genuine (or process it with fewer "
                "workers, or on a machine with more memory)", scan=True),
    ProblemKind("duplicate_case", "two files map to the same case id",
                "make the layout pattern specific enough to give each file its own case"),
    ProblemKind("image_in_two_cases", "one image file (or series folder) is the image of two cases given by "
                "different layout entries (a loose pattern such as `{case}.nrrd` also matches `brain1_image.nrrd`): "
                "both are ingested, so the scan is read, stored and counted twice until dedup merges them",
                "narrow the image patterns so that one layout entry takes the file (`patterns: {case: ...}`, a more "
                "specific suffix), or add the file to `exclude:`"),
    ProblemKind("sides_swapped", "most left/right labels of a dataset lie on the patient's other side (its sides named "
                "after the image's or viewer's left, a swapped mapping, or a flipped header that mirrors the whole "
                "patient: then the liver and spleen are on the wrong sides too)",
                "if the unpaired organs are mirrored too, reverse the arrays with the image_flip and label_flip fixes "
                "the message gives; if only the names are, swap each left/right pair in the dataset YAML's "
                "labels.values or labels.structures"),
    ProblemKind("series_not_image", "a folder a layout's image pattern matched holds a DICOM series that is not "
                "the scan (RTSTRUCT, SEG, ..., a localizer/scout or a secondary capture) beside the case's image "
                "series; it was not ingested",
                "nothing to do; narrow the image pattern to silence this"),
    ProblemKind("sequence_undeclared", "a file matches a layout's image pattern with a `{sequence}` value that "
                "the dataset's `sequences:` does not declare; it was not ingested",
                "add the sequence to `sequences:` if the file is an image, or to `exclude:` if not"),
    ProblemKind("image_is_label", "a file matches a layout's image pattern but is another case's label; it was "
                "not ingested as an image", "narrow the image pattern so it does not match label files"),
    ProblemKind("case_overridden", "a file of a case that a layout entry with `overrides: true` gives too (a "
                "folder of corrected cases: BraTS-MEN-Train-Fix over BraTS-MEN-Train); the override entry's file is "
                "read instead and this one is not ingested",
                "nothing to do: the dataset YAML declares the override"),
    ProblemKind("exclude_no_match", "an `exclude:` path of the dataset YAML (a glob holding a `/`) matches no file "
                "or folder under the source root, so it leaves nothing out",
                "write the path from the source root, as the files are named (`*` matches within a path too)"),
    ProblemKind("patient_id_timepoints", "the case ids read as a subject and a trailing number (`BraTS-MEN-00008-000`, "
                "`-001`: two timepoints of one subject) while `patient_id` is `{case}`: each case is a patient of its "
                "own, so a split can put one subject's timepoints on both sides (`curator sources check`)",
                "give {case} named groups under `patterns:` and name the patient by the subject "
                "(`case: '(?P<subject>...)-(?P<timepoint>...)'`, `patient_id: '{subject}'`); nothing, if each id is "
                "a patient of its own"),
    ProblemKind("index_entry_invalid", "an entry of a dataset.json index has no image path; it was skipped",
                "give the entry its \"image\" path, or remove it (the other entries were read)"),
    ProblemKind("layout_no_match", "a dataset's layout matched no file under its source root",
                "check the source root and the dataset's layout patterns"),
    ProblemKind("pattern_rejects", "files a layout pattern matches were turned away by a `patterns:` regex of one of "
                "its placeholders (`curator sources check`)",
                "nothing, if the regex leaves them out on purpose; else correct the regex under `patterns:` (it must "
                "match the whole value), or remove it"),
    ProblemKind("label_no_match", "a layout entry's label pattern matched no file: its images were ingested "
                "without labels (the row's path is the YAML's file and key, `Mine.yaml:layout[0].label`)",
                "check the pattern against the files, and that the labels were unpacked under the "
                "source root; remove `label:` if the dataset has none"),
    ProblemKind("index_labels_disagree", "a dataset.json index names a label value with a term the dataset YAML "
                "maps to another value (e.g. a swapped pair)",
                "check labels.values in the dataset YAML against the dataset's documentation; fix whichever is wrong"),
    ProblemKind("dicom_seg_labels_disagree", "a DICOM SEG names a segment with a term the dataset YAML maps to "
                "another segment number (tools number segments differently)",
                "check the file's numbering (`curator sources check`) and fix the YAML, or convert the files to one "
                "numbering"),
    ProblemKind("dicom_seg_overlap", "segments of a DICOM SEG overlap, so they cannot share one label map; the "
                "case's label was rejected",
                "read it per structure: `labels.encoding: per_structure` with `structures: {segment label: term}`"),
    ProblemKind("dicom_seg_geometry", "a DICOM SEG's frames do not form a regular volume; the label was rejected",
                "convert it to a label map on the image's grid (dcmqi's segimage2itkimage, highdicom)"),
    ProblemKind("dicom_seg_as_image", "a layout's image pattern matched a DICOM SEG (a segmentation, not an image)",
                "point the image pattern at the scan's series and the label pattern at the SEG"),
    ProblemKind("label_other_series", "a DICOM SEG or RTSTRUCT label says it was drawn on another series than the "
                "case's image; its positions fit the image's grid, so it was read",
                "check that it belongs to this scan (not another 4-D CT phase or reconstruction)"),
    ProblemKind("rtstruct_label_map", "an RTSTRUCT was given as a label map; its ROIs overlap by design",
                "declare `labels.encoding: per_structure` with `structures: {ROI name: term}` and a label pattern "
                "without {structure}"),
    ProblemKind("rtstruct_without_image", "an RTSTRUCT label has no image to be drawn on (a label-only case)",
                "give the case its image series"),
    ProblemKind("rtstruct_contour", "an RTSTRUCT contour is not a closed planar polygon (an open line)",
                "export the structure as closed planar contours"),
    ProblemKind("rtstruct_off_grid", "an RTSTRUCT contour does not lie on a slice of the case's image (another "
                "series, a tilted plane)", "check that the RTSTRUCT belongs to this image series"),
    ProblemKind("structure_missing", "a case's structure is not among those its SEG or RTSTRUCT file holds",
                "run `curator sources check` to see the structures the files hold"),
    ProblemKind("structures_not_in_file", "a per-structure label pattern without {structure} matched a file that "
                "holds no named structures (not a DICOM SEG or RTSTRUCT)",
                "put {structure} in the label pattern, or point it at the SEG or RTSTRUCT files"),
    ProblemKind("label_ambiguous", "a layout entry's label pattern shares no placeholder with its image pattern "
                "and several images matched: no label was given to them",
                "put the placeholder naming each image's case (e.g. {case}) in the label pattern"),
    ProblemKind("label_missing", "no file matches the layout's label pattern for this image (it matched for "
                "others); the case was ingested without labels",
                "rename the label or widen the pattern; nothing to do if the case has no label"),
    ProblemKind("store_missing", "a case's Zarr store does not exist",
                "run the preprocess stage (`curator run pipeline.yaml`) before stages that read stores"),
    ProblemKind("store_error", "a Zarr store or one of its arrays/layers is invalid or missing",
                "re-run preprocess for the case; check the layer and plane names"),
    ProblemKind("metadata_fields_dropped", "fields of a dataset's metadata file that neither `columns` maps nor "
                "`keep` names (or that identify a person) are left out of the release",
                "list a field under the dataset YAML's metadata `keep:` to publish it (fields naming a person or a "
                "date never are)"),
    ProblemKind("table_damaged", "a workspace table's Parquet file cannot be read (truncated or overwritten)",
                "run `curator run pipeline.yaml`: the stage that writes the table writes it again (cached cases "
                "are not redone)"),
    ProblemKind("key_invalid", "the workspace's pseudonym key file is empty, too short or not hex",
                _NEW_KEY),
    ProblemKind("key_missing", "the workspace's pseudonym key file is gone although its tables were made with one",
                _NEW_KEY),
    ProblemKind("store_damaged", "a shard file of a Zarr store is missing, truncated or corrupt, or its root "
                "zarr.json lacks curator's attributes (the case's geometry)",
                "in a workspace, delete the case's store folder (stores/<case>.zarr) and run `curator run "
                "pipeline.yaml`: preprocess rebuilds it; in a release, run `curator verify RELEASE` to list every "
                "damaged file and restore the release from a copy (or rebuild it: delete the workspace store as "
                "above and the release's folder, then run `curator run pipeline.yaml`: it rebuilds the store and "
                "writes the release again)"),
    ProblemKind("dedup_hash_limited",
                "the scan's body is too small for perceptual hashing; dedup finds only identical copies",
                "nothing to do for tiny fragments; check the image if it should show a body"),
    ProblemKind("dedup_other_study",
                "two studies of one patient in one source (e.g. two time points) look like one scan; dedup "
                "keeps them apart, as only identical voxels make two of the dataset's studies one scan",
                "nothing to do when they are a patient's visits; if the dataset gave one patient's re-uploaded "
                "scan a new study, check the pair in a viewer (they share a split either way: one patient)"),
    ProblemKind("dedup_thumbnail_missing",
                "a dedup verification thumbnail in the workspace is missing or changed",
                "delete the workspace's stages/dedup folder and run `curator dedup pipeline.yaml` again"),
    ProblemKind("normalisation_unknown", "a case store's normalisation attributes are not understood",
                "re-run preprocess, or give the models an explicit `intensity:` spec"),
    ProblemKind("normalisation_missing", "neither the case store nor the models say how to normalise the image",
                "re-run preprocess, or add `intensity: {clip, mean, std}` to the model specs"),
    ProblemKind("review_export_stale", "a review case folder was exported before the case's store changed under "
                "it: preprocess rebuilt it on a new grid (a new target spacing), so its revision has no place on the "
                "store now, or the case's reviewed labels changed since the export (a later round imported from "
                "another export folder, a revert): importing it would put the labels it was exported with back over "
                "the later ones; nothing of the case was imported (an earlier import of the case is kept: then a "
                "warning)",
                "export the case again into a new folder (--include-reviewed for a case reviewed before) and save "
                "the revision there"),
    ProblemKind("review_wrong_case", "a revision's header says it was exported for another case than the folder "
                "it was saved in (each exported NIfTI file names its case in its description field): another "
                "case's file; nothing of the case was imported",
                "check that the file belongs to the case; save each case's revision in the folder of the case it "
                "was exported for"),
    ProblemKind("review_large_change", "an imported revision replaced a structure's label with one that both "
                "gained and lost a large part of it (Dice under 0.9, at least 5 % of its voxels each way): a "
                "correction erases or adds parts, another case's label on the same grid moves both ways; the "
                "revision was imported (a warning)",
                "check the file against the case's image; if it is another case's, `curator review revert "
                "pipeline.yaml CASE` withdraws it; if the correction is right, nothing to do"),
    ProblemKind("review_accept_invalid", "worklist.csv's accept column of a review export names a structure the "
                "case's export has no label of, a case the export did not write, or accepts a case whose exported "
                "label file was changed or removed; nothing of the case was imported",
                "write `all` or term ids of the case's codes.json in the accept column of the export's own rows; "
                "save corrections as revised.nii.gz"),
    ProblemKind("revised_label_invalid", "a revised label file from review does not fit its case",
                "re-export the revised label on the case's grid (same shape as the preview's volume)"),
    ProblemKind("review_pseudo_edited", "a review case folder's pseudo.nii.gz was changed after the export (an "
                "editor's Save writes over the file it opened) and the folder holds no revised.nii.gz, or one that "
                "changes nothing: import reads corrections from revised.nii.gz only, so nothing of the case was "
                "imported (a warning when the folder's revised.nii.gz was imported beside it)",
                "rename pseudo.nii.gz to revised.nii.gz in the case folder and import again; if the edit is not "
                "wanted, delete the file and export the case again"),
    ProblemKind("revised_overlaps_original", "a revised label covered voxels of the dataset's own (original) label "
                "of another structure; the revision was imported without them (original > revised > pseudo), a "
                "warning naming the structures and the voxels left out",
                "nothing, if the brush spilled over; otherwise correct the revision so that it stops at the "
                "dataset's label"),
    ProblemKind("worker_crashed", "the worker process died on this case (crash or out of memory)",
                "inspect the file; lower --workers if memory ran out"),
    ProblemKind("gpu_out_of_memory", "the GPU ran out of memory on this case even one window at a time "
                "(pseudolabel retries at half the batch first); not cached, so the next run tries it again",
                "lower stages.pseudolabel.patch, set blend: float16, fewer etta.patches or models, one case per GPU, "
                "or device: cpu"),
    ProblemKind("gpu_unavailable", "stages.pseudolabel.device names a CUDA device the worker does not see; "
                "not cached, so the same run on a GPU worker tries the case again",
                "use device: auto (the CPU when no GPU is visible), or run on a GPU worker (one Dask worker per GPU: "
                "device: cuda)"),
    ProblemKind("disk_full", "the disk filled up while writing; nothing half-written was kept",
                "free disk space, then run the same command again (finished work is kept)"),
    ProblemKind("folder_unwritable", "a folder curator writes to (in the workspace or a release) refused the write "
                "(another owner, a read-only mount, an immutable flag); the stage stopped, nothing half-written was kept",
                "make the folder writable for the user running curator, then run the same command again "
                "(finished work is kept)"),
    ProblemKind("invalid_dataset_spec", "a dataset YAML named by pipeline.yaml (in `sources:` or `registry:`) is invalid "
                "or cannot be read; a source using it was skipped",
                "fix the listed keys of the dataset YAML (see README 'Adding a dataset'), or its path in pipeline.yaml"),
    ProblemKind("measure_failed", "QC could not measure a case whose store is intact (a bug in curator's measurement "
                "of this label); the case has no QC rows, and the failure is cached until its store or curator changes",
                "report this as a bug with the message and the case's label file; the rest of the run continued"),
    ProblemKind("internal_error", "curator failed on this case for a reason it does not know",
                "report this as a bug with the case's file; the rest of the run continued"),
]
PROBLEM_KINDS: dict[str, ProblemKind] = {p.kind: p for p in _KINDS}
if len(PROBLEM_KINDS) != len(_KINDS):  # a kind listed twice would silently lose one meaning
    raise RuntimeError(f"problem kinds listed twice: {sorted({p.kind for p in _KINDS if [q.kind for q in _KINDS].count(p.kind) > 1})}")


def remedy_for(kind: str) -> str:
    """The default remedy for a problem kind (a generic one for unknown kinds)."""
    found = PROBLEM_KINDS.get(kind)
    return found.remedy if found else "inspect the file named in this row"
