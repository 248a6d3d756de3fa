"""Writers of tiny fake downloads in real native layouts (MSD, KiTS23, TotalSegmentator, DICOM).

They are written from the layout facts, independently of the registry's parsing, so a
test that ingests their output checks the registry against the real folder structures.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from numpy.typing import NDArray
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from curator.io.nifti import write_nifti
from curator.io.volume import LPS_TO_RAS, Geometry, Volume

# Identifiers planted in demo/test DICOM headers; no output of curator may contain them.
PLANTED_PHI = {
    "PatientName": "ZZDOE^JANE^PLANTED",
    "PatientID": "PID-PLANTED-4711",
    "PatientBirthDate": "19430217",
    "InstitutionName": "Planted General Hospital",
    "InstitutionAddress": "1 Planted Road, Nowhere",
    "ReferringPhysicianName": "ZZDR^PLANTED",
    "AccessionNumber": "ACC-PLANTED-99",
    "StudyDate": "20010911",
    "OtherPatientIDs": "OPID-PLANTED-12",
    "PatientAddress": "42 Planted Street",
}


def save_nifti(path: Path, array: NDArray[Any], g: Geometry, dtype: Any = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_nifti(path, Volume(np.asarray(array), g), dtype=dtype)


def write_rtstruct(folder: Path, g: Geometry | None = None,
                   rois: dict[str, list[tuple[int, list[tuple[float, float]]]]] | None = None,
                   series: list[Path] | None = None) -> Path:
    """A one-file RTSTRUCT series (no pixel data), as TCIA studies keep beside their CT series;
    with ``rois`` (name -> [(slice k, polygon as (i, j) voxel coordinates on grid ``g``)]) its
    structure set and closed planar contours, in patient (LPS) millimetres; with ``series`` (the
    files of the image series) the reference to that series."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID("1.2.840.10008.5.1.4.1.1.481.3")  # RT Structure Set Storage
    meta.MediaStorageSOPInstanceUID, meta.TransferSyntaxUID = generate_uid(), ExplicitVRLittleEndian
    path = folder / "1-1.dcm"
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\x00" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID = "RTSTRUCT", generate_uid()
    if series:
        ref = pydicom.dcmread(series[0], stop_before_pixels=True)
        cited, study, frame = Dataset(), Dataset(), Dataset()
        cited.SeriesInstanceUID = ref.SeriesInstanceUID
        study.RTReferencedSeriesSequence = Sequence([cited])
        frame.FrameOfReferenceUID, frame.RTReferencedStudySequence = ref.FrameOfReferenceUID, Sequence([study])
        ds.ReferencedFrameOfReferenceSequence = Sequence([frame])
    if rois is not None and g is not None:
        ds.StructureSetROISequence, ds.ROIContourSequence = Sequence(), Sequence()
        for number, (name, polygons) in enumerate(rois.items(), start=1):
            roi = Dataset()
            roi.ROINumber, roi.ROIName = number, name
            ds.StructureSetROISequence.append(roi)
            rc = Dataset()
            rc.ReferencedROINumber, rc.ContourSequence = number, Sequence()
            for k, poly in polygons:
                ras = g.voxel_to_world(np.array([[i, j, k] for i, j in poly], dtype=np.float64))
                lps = (LPS_TO_RAS[:3, :3] @ ras.T).T
                c = Dataset()
                c.ContourGeometricType, c.NumberOfContourPoints = "CLOSED_PLANAR", len(poly)
                c.ContourData = [f"{v:.4f}" for v in lps.ravel()]
                rc.ContourSequence.append(c)
            ds.ROIContourSequence.append(rc)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_msd_task(root: Path, name: str, train: list[tuple[str, NDArray[Any], NDArray[Any], Geometry]],
                   test: list[tuple[str, NDArray[Any], Geometry]], labels: dict[str, str],
                   modality: dict[str, str]) -> None:
    """MSD task folder: dataset.json, imagesTr/labelsTr (same file names), imagesTs."""
    for case, img, lab, g in train:
        save_nifti(root / "imagesTr" / f"{case}.nii.gz", img, g, np.int16)
        save_nifti(root / "labelsTr" / f"{case}.nii.gz", lab, g, np.uint8)
    for case, img, g in test:
        save_nifti(root / "imagesTs" / f"{case}.nii.gz", img, g, np.int16)
    # the AppleDouble files that untar on macOS leaves behind (must be ignored)
    (root / "imagesTr" / f"._{train[0][0]}.nii.gz").write_bytes(b"\x00\x05\x16\x07 not an image")
    ds = {"name": name, "description": "synthetic", "tensorImageSize": "3D", "modality": modality,
          "labels": labels, "numTraining": len(train), "numTest": len(test),
          "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"} for c, *_ in train],
          "test": [f"./imagesTs/{c}.nii.gz" for c, *_ in test]}
    (root / "dataset.json").write_text(json.dumps(ds, indent=1))


def write_kits_case(root: Path, case: str, img: NDArray[Any] | None, seg: NDArray[Any], g: Geometry) -> None:
    """KiTS23: dataset/case_XXXXX/imaging.nii.gz + segmentation.nii.gz."""
    folder = root / "dataset" / case
    if img is not None:
        save_nifti(folder / "imaging.nii.gz", img, g, np.int16)
    save_nifti(folder / "segmentation.nii.gz", seg, g, np.uint8)


def write_totalseg_case(root: Path, sid: str, img: NDArray[Any], masks: dict[str, NDArray[Any]],
                        g: Geometry) -> None:
    """TotalSegmentator: sNNNN/ct.nii.gz + sNNNN/segmentations/<structure>.nii.gz (one file each)."""
    save_nifti(root / sid / "ct.nii.gz", img, g, np.int16)
    for name, m in masks.items():
        save_nifti(root / sid / "segmentations" / f"{name}.nii.gz", m.astype(np.uint8), g, np.uint8)


def write_dicom_series(folder: Path, img: NDArray[Any], g: Geometry, *, modality: str = "CT",
                       phi: dict[str, str] | None = None, series_uid: str | None = None,
                       skip_slices: tuple[int, ...] = (), uid_seed: str | None = None) -> list[Path]:
    """One file per slice along axis k; HU stored as uint16 with RescaleIntercept −1024 (CT).
    With ``uid_seed`` the UIDs are derived from it (the same files every time: the demo's
    downloads are the same bytes in every build); without, they are random."""
    folder.mkdir(parents=True, exist_ok=True)
    lps = LPS_TO_RAS @ g.matrix  # voxel -> LPS
    sp = g.spacing
    col_dir = lps[:3, 0] / sp[0]  # axis i = along a row (columns)
    row_dir = lps[:3, 1] / sp[1]
    def uid(*part: object) -> UID:
        return generate_uid(entropy_srcs=[uid_seed, *map(str, part)]) if uid_seed is not None else generate_uid()

    study, series = uid("study"), series_uid or uid("series")
    frame = uid("frame")
    intercept = -1024.0 if modality == "CT" else 0.0
    stored = np.clip(np.rint(img - intercept), 0, 65535).astype(np.uint16)
    paths = []
    for k in range(img.shape[2]):
        if k in skip_slices:
            continue
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage if modality == "CT" else MRImageStorage
        meta.MediaStorageSOPInstanceUID = uid("instance", k)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"IM{k + 1:04d}.dcm"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\x00" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality = modality
        ds.Manufacturer = "CURATOR-PHANTOM"
        ds.ManufacturerModelName = "Phantom 1"
        for key, value in (phi or {}).items():
            setattr(ds, key, value)
        ds.ContentDate = dt.date(2020, 1, 1).strftime("%Y%m%d")
        ds.InstanceNumber = k + 1
        pos = lps[:3, :3] @ np.array([0.0, 0.0, float(k)]) + lps[:3, 3]
        ds.ImagePositionPatient = [f"{v:.6f}" for v in pos]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*col_dir, *row_dir)]
        ds.PixelSpacing = [f"{sp[1]:.6f}", f"{sp[0]:.6f}"]
        ds.SliceThickness = f"{sp[2]:.6f}"
        ds.Rows, ds.Columns = img.shape[1], img.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope = f"{intercept:g}", "1"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def write_enhanced_dicom(path: Path, img: NDArray[Any], g: Geometry, *,
                         frame_order: list[int] | None = None) -> Path:
    """One Enhanced CT (multi-frame) object holding the slices of ``img`` along axis k, each
    frame placed by its own PlanePositionSequence; ``frame_order`` lists which slice each frame
    holds (default: every slice in order; leave one out for a missing frame, permute to shuffle).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    order = list(range(img.shape[2])) if frame_order is None else frame_order
    lps = LPS_TO_RAS @ g.matrix
    sp = g.spacing
    enhanced_ct = UID("1.2.840.10008.5.1.4.1.1.2.1")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = enhanced_ct, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\x00" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = enhanced_ct, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Modality = "CT"
    ds.NumberOfFrames, ds.Rows, ds.Columns = len(order), img.shape[1], img.shape[0]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    measures, orientation, rescale = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing = [f"{sp[1]:.6f}", f"{sp[0]:.6f}"]
    measures.SliceThickness = f"{sp[2]:.6f}"
    orientation.ImageOrientationPatient = [f"{v:.6f}" for v in (*(lps[:3, 0] / sp[0]), *(lps[:3, 1] / sp[1]))]
    rescale.RescaleIntercept, rescale.RescaleSlope, rescale.RescaleType = "0", "1", "HU"
    shared = Dataset()
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelValueTransformationSequence = Sequence([rescale])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for k in order:
        position, group = Dataset(), Dataset()
        position.ImagePositionPatient = [f"{v:.6f}" for v in lps[:3, :3] @ np.array([0.0, 0.0, float(k)]) + lps[:3, 3]]
        group.PlanePositionSequence = Sequence([position])
        frames.append(group)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    stored = np.rint(img).astype(np.int16)
    ds.PixelData = np.stack([np.ascontiguousarray(stored[:, :, k].T) for k in order]).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def read_dicom_header(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


def write_dicom_seg(path: Path, series: list[Path], label: NDArray[Any], segments: dict[int, str], *,
                    omit_empty: bool = True, masks: dict[int, NDArray[Any]] | None = None,
                    fractional: bool = False, labelmap: bool = False) -> Path:
    """A DICOM SEG of ``series`` (the files :func:`write_dicom_series` wrote, slice k =
    ``series[k]``) from ``label``, a label map on the series' grid whose values are segment
    numbers (``segments``: number -> label), written with highdicom; empty frames left out unless
    ``omit_empty=False``. ``masks`` gives each segment's own mask instead (they may overlap), or
    with ``fractional`` its probabilities in [0, 1] (a FRACTIONAL SEG); ``labelmap`` writes a
    LABELMAP SEG (one frame per slice holding segment numbers, DICOM 2024)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    sources = [pydicom.dcmread(p) for p in series]
    for ds in sources:  # the patient and study modules a SEG copies (the phantom series leave them out)
        for key, value in (("PatientID", "PHANTOM"), ("PatientName", "Phantom^Test"), ("PatientBirthDate", ""),
                           ("PatientSex", ""), ("StudyDate", "20200101"), ("StudyTime", "000000"),
                           ("StudyID", "1"), ("AccessionNumber", ""), ("ReferringPhysicianName", ""),
                           ("SeriesNumber", 1)):
            if key not in ds:
                setattr(ds, key, value)
    if masks is None:
        frames: NDArray[Any] = np.stack([label[:, :, k].T for k in range(label.shape[2])]).astype(np.uint8)
    else:
        frames = np.stack([np.stack([masks[n][:, :, k].T for k in range(label.shape[2])]) for n in sorted(segments)],
                          axis=-1).astype(np.float32 if fractional else np.uint8)
    described = [hd.seg.SegmentDescription(segment_number=n, segment_label=name,
                                           segmented_property_category=codes.SCT.Organ,
                                           segmented_property_type=codes.SCT.Organ,
                                           algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL)
                 for n, name in sorted(segments.items())]
    kind = (hd.seg.SegmentationTypeValues.FRACTIONAL if fractional else hd.seg.SegmentationTypeValues.LABELMAP
            if labelmap else hd.seg.SegmentationTypeValues.BINARY)
    seg = hd.seg.Segmentation(source_images=sources, pixel_array=frames, segmentation_type=kind,
                              segment_descriptions=described, series_instance_uid=hd.UID(), series_number=2,
                              sop_instance_uid=hd.UID(), instance_number=1, manufacturer="curator",
                              manufacturer_model_name="tests", software_versions="0", device_serial_number="0",
                              omit_empty_frames=omit_empty)
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path
