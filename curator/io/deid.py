"""DICOM de-identification (PS3.15 Annex E, Basic Application Level Confidentiality Profile).

Two tools:

* :func:`safe_metadata` — the *only* way DICOM facts leave ingest: a whitelist of
  technical, non-identifying attributes (modality, manufacturer, field strength, …).
* :func:`deidentify` — applies the basic profile to a dataset (remove / empty / replace
  UIDs with keyed hashes, drop private tags, overlays and curves) for the rare case a
  DICOM object must be written (e.g. an export).

>>> from pydicom.dataset import Dataset
>>> ds = Dataset(); ds.PatientName = "Doe^Jane"; ds.Modality = "CT"
>>> safe_metadata(ds)
{'modality': 'CT'}
"""

from __future__ import annotations

import copy
import hashlib
import hmac
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.tag import Tag

# (group, element) -> action: X remove, Z empty, D dummy, U replace UID.
# The identifying attributes of PS3.15 Table E.1-1 that occur in image objects.
BASIC_PROFILE: dict[tuple[int, int], str] = {
    (0x0008, 0x0014): "U",  # Instance Creator UID
    (0x0008, 0x0018): "U",  # SOP Instance UID
    (0x0008, 0x0020): "Z",  # Study Date
    (0x0008, 0x0021): "X",  # Series Date
    (0x0008, 0x0022): "X",  # Acquisition Date
    (0x0008, 0x0023): "Z",  # Content Date
    (0x0008, 0x002A): "X",  # Acquisition DateTime
    (0x0008, 0x0030): "Z",  # Study Time
    (0x0008, 0x0031): "X",  # Series Time
    (0x0008, 0x0032): "X",  # Acquisition Time
    (0x0008, 0x0033): "Z",  # Content Time
    (0x0008, 0x0050): "Z",  # Accession Number
    (0x0008, 0x0080): "X",  # Institution Name
    (0x0008, 0x0081): "X",  # Institution Address
    (0x0008, 0x0090): "Z",  # Referring Physician's Name
    (0x0008, 0x0092): "X",  # Referring Physician's Address
    (0x0008, 0x0094): "X",  # Referring Physician's Telephone Numbers
    (0x0008, 0x1010): "X",  # Station Name
    (0x0008, 0x1030): "X",  # Study Description
    (0x0008, 0x103E): "X",  # Series Description
    (0x0008, 0x1040): "X",  # Institutional Department Name
    (0x0008, 0x1048): "X",  # Physician(s) of Record
    (0x0008, 0x1050): "X",  # Performing Physician's Name
    (0x0008, 0x1060): "X",  # Name of Physician(s) Reading Study
    (0x0008, 0x1070): "X",  # Operators' Name
    (0x0008, 0x1080): "X",  # Admitting Diagnoses Description
    (0x0008, 0x1155): "U",  # Referenced SOP Instance UID
    (0x0008, 0x2111): "X",  # Derivation Description
    (0x0010, 0x0010): "Z",  # Patient's Name
    (0x0010, 0x0020): "Z",  # Patient ID
    (0x0010, 0x0021): "X",  # Issuer of Patient ID
    (0x0010, 0x0030): "Z",  # Patient's Birth Date
    (0x0010, 0x0032): "X",  # Patient's Birth Time
    (0x0010, 0x0040): "Z",  # Patient's Sex
    (0x0010, 0x1000): "X",  # Other Patient IDs
    (0x0010, 0x1001): "X",  # Other Patient Names
    (0x0010, 0x1005): "X",  # Patient's Birth Name
    (0x0010, 0x1010): "X",  # Patient's Age
    (0x0010, 0x1020): "X",  # Patient's Size
    (0x0010, 0x1030): "X",  # Patient's Weight
    (0x0010, 0x1040): "X",  # Patient's Address
    (0x0010, 0x1060): "X",  # Patient's Mother's Birth Name
    (0x0010, 0x1090): "X",  # Medical Record Locator
    (0x0010, 0x2154): "X",  # Patient's Telephone Numbers
    (0x0010, 0x2160): "X",  # Ethnic Group
    (0x0010, 0x2180): "X",  # Occupation
    (0x0010, 0x21B0): "X",  # Additional Patient History
    (0x0010, 0x4000): "X",  # Patient Comments
    (0x0018, 0x1000): "X",  # Device Serial Number
    (0x0018, 0x1030): "X",  # Protocol Name
    (0x0020, 0x000D): "U",  # Study Instance UID
    (0x0020, 0x000E): "U",  # Series Instance UID
    (0x0020, 0x0010): "Z",  # Study ID
    (0x0020, 0x0052): "U",  # Frame of Reference UID
    (0x0020, 0x0200): "U",  # Synchronization Frame of Reference UID
    (0x0020, 0x4000): "X",  # Image Comments
    (0x0032, 0x1032): "X",  # Requesting Physician
    (0x0032, 0x1060): "X",  # Requested Procedure Description
    (0x0040, 0x0244): "X",  # Performed Procedure Step Start Date
    (0x0040, 0x0245): "X",  # Performed Procedure Step Start Time
    (0x0040, 0x0253): "X",  # Performed Procedure Step ID
    (0x0040, 0x0254): "X",  # Performed Procedure Step Description
    (0x0040, 0xA124): "U",  # UID
    (0x0088, 0x0140): "U",  # Storage Media File-set UID
    (0x3006, 0x0024): "U",  # Referenced Frame of Reference UID
    (0x3006, 0x00C2): "U",  # Related Frame of Reference UID
}

# Technical attributes that identify nobody and help analysis (Touchstone-style per-group study).
SAFE_KEYWORDS: dict[str, str] = {
    "Modality": "modality",
    "Manufacturer": "manufacturer",
    "ManufacturerModelName": "scanner_model",
    "MagneticFieldStrength": "field_strength_t",
    "KVP": "kvp",
    "SliceThickness": "slice_thickness_mm",
    "ConvolutionKernel": "kernel",
}


def safe_metadata(ds: Dataset) -> dict[str, Any]:
    """Whitelisted, non-identifying attributes of ``ds`` as plain Python values."""
    out: dict[str, Any] = {}
    for keyword, name in SAFE_KEYWORDS.items():
        if keyword not in ds:
            continue
        elem = ds.data_element(keyword)
        value = elem.value if elem is not None else None
        if value in (None, ""):
            continue
        if isinstance(value, pydicom.multival.MultiValue):
            value = "\\".join(str(v) for v in value)
        elif isinstance(value, (pydicom.valuerep.DSfloat, pydicom.valuerep.IS, float, int)):
            value = float(value)
        else:
            value = str(value).strip()[:64]
        out[name] = value
    return out


def _uid(key: bytes, value: str) -> str:
    digest = hmac.new(key, value.encode(), hashlib.sha256).hexdigest()
    return "2.25." + str(int(digest[:32], 16))


def deidentify(ds: Dataset, key: bytes) -> Dataset:
    """A de-identified copy of ``ds``: basic profile actions, private tags and overlays removed.

    UIDs are replaced by keyed hashes (``2.25.<int>``), so relations between objects of one
    study survive while the originals cannot be recovered without ``key``.
    """
    out = copy.deepcopy(ds)  # never touch the caller's dataset
    out.remove_private_tags()

    def walk(d: Dataset) -> None:
        for elem in list(d):
            tag = (elem.tag.group, elem.tag.element)
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item)
            action = BASIC_PROFILE.get(tag)
            if 0x6000 <= elem.tag.group <= 0x60FF or 0x5000 <= elem.tag.group <= 0x50FF:
                action = "X"  # overlays and curves can carry burned-in text
            if action is None:
                continue
            if action == "X":
                del d[elem.tag]
            elif action == "Z":
                d[elem.tag].value = ""
            elif action == "U" and elem.value:
                d[elem.tag].value = _uid(key, str(elem.value))

    walk(out)
    if hasattr(out, "file_meta") and "MediaStorageSOPInstanceUID" in out.file_meta:
        out.file_meta.MediaStorageSOPInstanceUID = out.get("SOPInstanceUID", "")
    out.PatientIdentityRemoved = "YES"
    out.DeidentificationMethod = "curator basic confidentiality profile"
    out.add_new(Tag(0x0012, 0x0064), "SQ", [])  # De-identification Method Code Sequence (empty)
    return out
