"""Files under a source root: every file curator reads from a dataset's folder is checked here first.

A dataset (and its YAML) may come from elsewhere, and an archive keeps what a tree can hold:
links to any file of the machine, FIFOs (reading one waits forever) and links to devices
(``/dev/zero`` never ends). So a file of a source is read only when

* its path, links followed, stays under the source root (``path_escape``); the files of a DICOM
  series folder or a slice folder stay under that folder, as an MHD's data file lies beside its
  header (:func:`folder_member`);
* it is a regular file, as ``os.stat`` tells before anything opens it (``not_a_regular_file``):
  a FIFO, socket, device or folder is never opened;
* a text file of the dataset (``metadata.file``, ``official_split.file``, a layout's ``index:``)
  is at most :data:`MAX_TEXT_BYTES` (``file_too_large``), read by :func:`read_text_inside`.

The checks are a ``stat`` and, for a link, a path resolution: nothing is opened to make them.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from curator.errors import InputError, ReadError

# a metadata table, split list or index of a real dataset is kilobytes to a few megabytes; more than
# this is a damaged file or a link to something endless, and is refused before it fills the memory
MAX_TEXT_BYTES = 256 * 1024 * 1024

# links out of a source root are refused on purpose (only what is under the folder named is read)
LINK_OUT_REMEDY = ("point the source's `root:` in pipeline.yaml at the folder the link leads to (a root that is itself "
                   "a link is fine), or copy the files into the source folder (docs/registry.md, 'The source root')")
FOLDER_LINK_REMEDY = ("copy the file into the folder: the files of a DICOM series or slice folder are read from that "
                      "folder only (docs/registry.md, 'The source root')")


def confine(root: Path, relative: str) -> Path:
    """``root / relative``, refusing an absolute path or one with ``..`` (links are
    :func:`resolve_inside`'s: a file to read goes through :func:`regular_inside` too).

    >>> confine(Path('/data/ds'), 'a/b.nii.gz').as_posix()
    '/data/ds/a/b.nii.gz'
    """
    if os.path.isabs(relative) or ".." in Path(relative).parts:
        raise InputError("path_escape", f"pattern or path {relative!r} leaves the source root",
                         path=str(root), remedy="write layout patterns relative to the source root, without '..'")
    return root / relative


def resolve_inside(root: Path, path: Path, *, within: str = "the source root", remedy: str = LINK_OUT_REMEDY) -> Path:
    """Resolve symlinks of ``path`` and check the target stays under ``root`` (``within`` names
    ``root`` in the error)."""
    try:
        real = path.resolve(strict=True)
    except RuntimeError as e:  # symlink loop (py < 3.13)
        raise ReadError("symlink_loop", "a symbolic link loops back on itself", path=str(path),
                        remedy="remove or fix the link") from e
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ReadError("symlink_loop", "a symbolic link loops back on itself", path=str(path),
                            remedy="remove or fix the link") from e
        if path.is_symlink():  # the link is there, what it points to is not
            raise ReadError("file_not_found", "a symbolic link points to a file that does not exist (a dangling "
                            "link)", path=str(path), remedy="fix the link, or put the file it names in place") from e
        raise ReadError("file_not_found", "the file does not exist (or is a broken link)", path=str(path),
                        remedy="check the download") from e
    root_real = root.resolve()
    if real != root_real and root_real not in real.parents:
        raise InputError("path_escape", f"the link points outside {within}",  # where to: a machine path
                         path=str(path), remedy=remedy)
    return real


_SPECIAL = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
            (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))


def _what(mode: int) -> str:
    return next((name for test, name in _SPECIAL if test(mode)), "not a regular file")


def not_regular(path: Path, mode: int) -> ReadError:
    """The error for ``path`` whose ``stat`` mode is no regular file's."""
    return ReadError("not_a_regular_file", f"the path is {_what(mode)}, not a file; curator never opens it",
                     path=str(path), remedy="replace it with the real file")


def regular_inside(root: Path, path: Path, *, within: str = "the source root",
                   remedy: str = LINK_OUT_REMEDY) -> Path:
    """The real path of ``path``, a regular file whose links lead nowhere outside ``root``: a
    ``path_escape``, ``symlink_loop``, ``file_not_found`` or ``not_a_regular_file`` error
    otherwise (the file is only ``stat``-ed, never opened)."""
    return _regular_stat(root, path, within=within, remedy=remedy)[0]


def _regular_stat(root: Path, path: Path, *, within: str = "the source root",
                  remedy: str = LINK_OUT_REMEDY) -> tuple[Path, os.stat_result]:
    """:func:`regular_inside`, with the ``stat`` it checked (to match the file opened later)."""
    real = resolve_inside(root, path, within=within, remedy=remedy)
    try:
        st = os.stat(real)
        mode = st.st_mode
    except PermissionError as e:
        raise ReadError("permission_denied", "the file cannot be reached", path=str(path),
                        remedy="make it and its folders readable by the user running curator") from e
    except OSError as e:  # gone since it was resolved
        raise ReadError("file_not_found", "the file does not exist", path=str(path), remedy="check the download") from e
    if not stat.S_ISREG(mode):
        raise not_regular(path, mode)
    return real, st


def folder_member(folder: Path, path: Path, shown: str | None = None) -> None:
    """Check a file listed in ``folder`` (a DICOM series, a slice folder): a regular file, and a
    link only to a file in ``folder``. One ``lstat`` for a file that is no link. ``shown``
    (``"file 3 of 120 (sorted by file name)"``) names the file in the error, whose path is then
    ``folder``: a DICOM file's name can be a UID of the patient's study."""
    try:
        try:
            mode = os.lstat(path).st_mode
        except OSError as e:
            raise ReadError("file_not_found", "a file of the folder is gone", path=str(path),
                            remedy="check the download") from e
        if stat.S_ISLNK(mode):
            regular_inside(folder, path, within="its folder", remedy=FOLDER_LINK_REMEDY)
        elif not stat.S_ISREG(mode):
            raise not_regular(path, mode)
    except InputError as e:
        if shown is None:
            raise
        raise type(e)(e.kind, f"{shown} of the folder: {e.detail.replace('the path is', 'it is')}", path=str(folder),
                      remedy=f"{e.remedy} (in the folder this row names, `find . ! -type f -o -type l` lists the links and "
                             "special files)"
                      ) from e


def read_text_inside(root: Path, relative: str, what: str, missing: str,
                     limit: int | None = None) -> tuple[Path, str]:
    """The path and UTF-8 text of the dataset's text file ``relative`` (``what``: "metadata file
    named by the dataset YAML", for the errors; ``missing``: what to do when it is missing),
    checked by :func:`regular_inside` first and refused above ``limit`` bytes (:data:`MAX_TEXT_BYTES`)."""
    limit = MAX_TEXT_BYTES if limit is None else limit
    path = confine(root, relative)
    if not os.path.lexists(path):
        raise ReadError("file_not_found", f"the {what} is missing", path=str(path), remedy=missing)
    real, checked = _regular_stat(root, path)
    most = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit} bytes"
    too_large = ReadError("file_too_large", f"the {what} is larger than the {most} curator reads of "
                          "a metadata, split or index file", path=str(path),
                          remedy="check the file: a table of cases is far smaller, so this one is damaged or not the "
                          "dataset's own; replace it with the real file")
    changed = InputError("path_escape", f"the {what} changed while it was being read (another file or a link "
                         "took its place)", path=str(path), remedy="read the source when nothing is writing to it")
    try:
        # O_NONBLOCK: were the file swapped for a FIFO since it was checked, opening it still returns;
        # O_NOFOLLOW: nor is a link put in its place followed; a folder on the way swapped for a link
        # since it was resolved opens another file than the one checked: the inode check
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
                     | getattr(os, "O_NOFOLLOW", 0))
    except PermissionError as e:
        raise ReadError("permission_denied", f"the {what} cannot be opened for reading", path=str(path),
                        remedy="make it readable by the user running curator") from e
    except OSError as e:
        if e.errno == errno.ELOOP:  # the real path's last part became a link since it was resolved
            raise changed from e
        raise ReadError("file_not_found", f"the {what} is missing", path=str(path), remedy=missing) from e
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if (st.st_dev, st.st_ino) != (checked.st_dev, checked.st_ino):
            raise changed
        if not stat.S_ISREG(st.st_mode):
            raise not_regular(path, st.st_mode)
        if st.st_size > limit:
            raise too_large
        data = f.read(limit + 1)  # a file that grows while it is read stops at the limit too
    if len(data) > limit:
        raise too_large
    try:
        return path, data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError("corrupt_file", f"the {what} is not UTF-8 text ({e})", path=str(path),
                         remedy="save it as UTF-8 text, or download it again") from e
