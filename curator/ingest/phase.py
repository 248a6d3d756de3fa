"""The cardiac phase of each case (end-diastole ``ED``, end-systole ``ES``), as the dataset YAML's
``phase:`` says where to find it.

Cine datasets label two frames per patient; their left ventricles differ by about half in
volume, so QC judges each phase as a cohort of its own (``cases.phase``). Two declarations::

    phase:                  # ACDC: Info.cfg beside the frames says which frame is which
      file: Info.cfg        # a `key: value` text file in each case's image folder
      frame: frame          # the placeholder holding the case's frame number (patient001_frame{frame})
      keys: {ED: ED, ES: ES}    # its keys naming a frame number -> the phase (this is the default)

    phase: {field: phase}   # CMRxMotion: the placeholder's value is the phase itself (P001-1-ED)

Only the lines ``keys`` names are read: the rest of the file (ACDC's ``Group``, ``Height``,
``Weight``) describes the patient and never leaves ingest, not even in a problem message.
A file that cannot be read or parsed, or a frame it does not name, leaves the case's phase null
with a warning naming the file (:func:`case_phases`); the case is ingested all the same.

>>> parse_sidecar("ED: 1\\nES: 12\\nGroup: DCM\\nHeight: 184.0\\n", DEFAULT_KEYS, "Info.cfg")
{'ED': 1, 'ES': 12}
>>> phase_of_frame({"ED": 1, "ES": 12}, "12"), phase_of_frame({"ED": 1, "ES": 12}, "05")
('ES', None)
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from typing import Any

from curator.errors import CuratorError, InputError
from curator.io.confined import read_text_inside

PHASES = ("ED", "ES")
DEFAULT_KEYS: dict[str, str] = {"ED": "ED", "ES": "ES"}
PHASE_KEYS = ("file", "frame", "keys", "field")
# lines of a cine dataset's sidecar that describe the patient (ACDC's Info.cfg: Group, Height, Weight)
PATIENT_KEYS = frozenset({"group", "height", "weight", "age", "sex", "gender", "bmi", "name", "birthdate", "pathology"})
SIDECAR_LIMIT = 1 << 16  # a key: value file of a few lines; anything larger is not the dataset's own
FILE_REMEDY = ("check the file against the dataset's download (ACDC's Info.cfg holds lines `ED: 1` and `ES: 12`) "
               "and download the case again if it differs; the case is ingested without a phase until then")


def validate_phase(phase: Any, fields: Iterable[str]) -> list[tuple[str, str, str]]:
    """Every problem of a dataset YAML's ``phase:`` mapping as ``(loc, kind, message)``;
    ``fields``: the placeholders and named groups the layout gives."""
    out: list[tuple[str, str, str]] = []

    def bad(loc: str, kind: str, message: str) -> None:
        out.append((loc, kind, message))

    if not isinstance(phase, dict):
        bad("phase", "type", f"phase must be a mapping ({{file: Info.cfg, frame: frame}} or {{field: phase}}), "
            f"not {phase!r}"[:200])
        return out
    known = set(fields)
    from curator.registry.spec import unknown_key

    for k in sorted(set(phase) - set(PHASE_KEYS), key=str):
        bad(f"phase.{k}", "unknown_key", unknown_key(k, PHASE_KEYS, "phase"))
    if bool(phase.get("file")) == bool(phase.get("field")):
        bad("phase", "value", "phase needs one of `file:` (a key: value file beside each case's image, with "
            "`frame:`) and `field:` (a placeholder whose value is the phase): not both, not neither")
    for k in ("frame", "field"):
        if phase.get(k) is not None and (not isinstance(phase[k], str) or phase[k] not in known):
            bad(f"phase.{k}", "value", f"phase.{k} {phase[k]!r} is no placeholder of the layout or named group of "
                f"`patterns` (they give {sorted(known)})")
    if phase.get("file"):
        f = phase["file"]
        if not isinstance(f, str) or f.startswith("/") or ".." in f.split("/"):
            bad("phase.file", "path_escape", f"phase.file {f!r} must be a file name relative to the case's image "
                "folder")
        if phase.get("frame") is None:
            bad("phase.frame", "missing", "phase.file needs `frame:`, the placeholder holding the case's frame "
                "number, to tell which of the file's frames the case is")
    keys = phase.get("keys", DEFAULT_KEYS)
    if not isinstance(keys, dict) or not keys or any(not isinstance(k, str) or v not in PHASES
                                                     for k, v in keys.items()):
        bad("phase.keys", "value", f"phase.keys maps a key of the file to one of {list(PHASES)}, not {keys!r}"[:200])
    elif phase.get("field") and "keys" in phase:
        bad("phase.keys", "value", "phase.keys is for `file:`; with `field:` the value is the phase")
    else:  # a mistyped key must not make ingest read (and a problem quote) a line about the patient
        for k in sorted(k for k in keys if k.strip().lower() in PATIENT_KEYS):
            bad("phase.keys", "value", f"phase.keys names {k!r}, a line describing the patient, not a frame: name "
                "the file's ED and ES lines (ACDC: {ED: ED, ES: ES})")
    return out


def parse_sidecar(text: str, keys: Mapping[str, str], shown: str) -> dict[str, int]:
    """``{phase: frame number}`` from a ``key: value`` text file (ACDC's ``Info.cfg``), reading
    only the lines ``keys`` names. Raises ``phase_file_malformed`` naming ``shown`` and the line;
    the values of other lines are never quoted (they describe the patient)."""
    found: dict[str, int] = {}
    lines: dict[str, int] = {}  # the line each phase was read from
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        if not sep:
            raise InputError("phase_file_malformed", f"{shown} line {n} is not a `key: value` line", path=shown,
                             remedy=FILE_REMEDY)
        key = key.strip()
        if key not in keys:
            continue
        phase = keys[key]
        try:
            frame = int(value.strip())
        except ValueError:
            # the value is never quoted: a mistyped key (``Weight: ED``) would put patient information in a message
            raise InputError("phase_file_malformed", f"{shown} line {n}: {key}'s value is not a whole number (a frame "
                             "number)", path=shown, remedy=FILE_REMEDY) from None
        if phase in found and found[phase] != frame:
            raise InputError("phase_file_malformed", f"{shown} gives {phase} twice, with different frames (lines "
                             f"{lines[phase]} and {n})", path=shown, remedy=FILE_REMEDY)
        found[phase], lines[phase] = frame, n
    missing = sorted({p for p in keys.values()} - set(found))
    if missing:
        raise InputError("phase_file_malformed", f"{shown} has no line for {', '.join(missing)} (keys "
                         f"{', '.join(k for k, p in keys.items() if p in missing)})", path=shown, remedy=FILE_REMEDY)
    if len(set(found.values())) < len(found):
        raise InputError("phase_file_malformed", f"{shown} names one frame for "
                         f"{' and '.join(sorted(found))} ({next(iter(found.values()))})", path=shown,
                         remedy=FILE_REMEDY)
    return found


def phase_of_frame(frames: Mapping[str, int], frame: str) -> str | None:
    """The phase whose frame number is ``frame`` (the file name's text, ``"01"``), or None."""
    try:
        n = int(frame)
    except ValueError:
        return None
    return next((p for p, f in frames.items() if f == n), None)


def sidecar_path(case_file: str, file: str) -> str:
    """The sidecar ``file`` in the folder of ``case_file`` (both relative to the source root)."""
    return posixpath.normpath(posixpath.join(posixpath.dirname(case_file), file))


def case_phases(phase: Mapping[str, Any], root: Any, cases: Iterable[Any]
                ) -> dict[str, tuple[str | None, CuratorError | None]]:
    """case id -> (its phase or None, the problem that left it None) for the layout's ``cases``
    (:class:`curator.registry.layout.CaseFiles`); each sidecar file is read once."""
    out: dict[str, tuple[str | None, CuratorError | None]] = {}
    read: dict[str, dict[str, int] | CuratorError] = {}
    keys = dict(phase.get("keys") or DEFAULT_KEYS)
    for c in cases:
        where = c.image or (c.labels[0][1] if c.labels else None)
        if phase.get("field"):
            value = str(c.fields.get(phase["field"], ""))
            ok = value.upper() if value.upper() in PHASES else None
            out[c.case_id] = (ok, None if ok else InputError(
                "phase_unmatched", f"the case's {{{phase['field']}}} is {value!r}, not one of {', '.join(PHASES)}",
                path=where, remedy="narrow `patterns:` to the phases, or leave `phase:` out"))
            continue
        if where is None:
            out[c.case_id] = (None, None)
            continue
        rel = sidecar_path(where, str(phase["file"]))
        if rel not in read:
            try:
                _, text = read_text_inside(root, rel, f"phase file {phase['file']} (the dataset YAML's phase.file)",
                                           "restore the file from the dataset's download; the case is ingested "
                                           "without a phase until then", limit=SIDECAR_LIMIT)
                read[rel] = parse_sidecar(text, keys, rel)
            except CuratorError as e:  # named by its path in the source, as the layout's files are
                read[rel] = type(e)(e.kind, e.detail, path=rel, remedy=e.remedy)
        got = read[rel]
        if isinstance(got, CuratorError):
            out[c.case_id] = (None, got)
            continue
        frame = str(c.fields.get(str(phase["frame"]), ""))
        ok = phase_of_frame(got, frame)
        out[c.case_id] = (ok, None if ok else InputError(
            "phase_unmatched", f"frame {frame!r} of the file name is none of the frames {rel} names ("
            + ", ".join(f"{p} {f}" for p, f in sorted(got.items())) + ")", path=rel,
            remedy="check that the frame's file and the phase file belong together; the case is ingested without "
            "a phase"))
    return out


def guess_phase(root: Any, files: list[str], images: list[str], pattern: Any) -> dict[str, str] | None:
    """``{file, frame}`` for ``curator sources init``: a text file beside every image the
    compiled image ``pattern`` matches (of ``images``) that names ED and ES frames, and the one
    placeholder whose number is, for each image, one of its folder's frames — ACDC's Info.cfg and
    ``{frame}``. None when no such file and placeholder are there."""
    matches = [(img, m.groupdict()) for img in images if (m := pattern.fullmatch(img.rstrip("/")))]
    folders = {img.rpartition("/")[0] for img, _ in matches}
    found: dict[str, dict[str, dict[str, int]]] = {}  # sidecar name -> folder -> its frames
    for f in files:
        folder, _, name = f.rpartition("/")
        if folder not in folders or "." in name and name.rsplit(".", 1)[1].lower() in ("gz", "nii", "nrrd", "mha", "mhd", "dcm", "npy"):
            continue
        try:
            _, text = read_text_inside(root, f, "phase file", "", limit=SIDECAR_LIMIT)
            found.setdefault(name, {})[folder] = parse_sidecar(text, DEFAULT_KEYS, f)
        except (CuratorError, UnicodeDecodeError):
            continue
    for name, by_folder in sorted(found.items()):
        for placeholder in sorted({k for _, fields in matches for k in fields}):
            seen = set()
            for img, fields in matches:
                frames = by_folder.get(img.rpartition("/")[0])
                got = None if frames is None else phase_of_frame(frames, fields.get(placeholder) or "")
                if got is None:
                    break
                seen.add(got)
            else:
                if matches and seen == set(PHASES):
                    return {"file": name, "frame": placeholder}
    return None
