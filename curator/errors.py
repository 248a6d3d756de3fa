"""One exception hierarchy for curator.

Every error carries a machine-readable ``kind`` (it becomes the ``kind`` column of the
``problems`` table), the ``path`` it concerns when there is one, and a message that
says what went wrong *and what to do*. Subclasses also inherit the built-in exception
they specialise, so ``except ValueError`` keeps working for callers that expect it.

>>> e = InputError("truncated_file", "gzip stream ends early", path="a.nii.gz",
...                remedy="download the file again")
>>> e.kind, str(e)
('truncated_file', 'a.nii.gz: gzip stream ends early. What to do: download the file again')

An error rebuilt from its text alone — ``type(e)(text)``, as PyTorch's DataLoader re-raises an
error of a worker process — keeps the text as its message, and its kind when the text carries
a :func:`kind_note` (the loader's datasets add one to the errors their workers raise):

>>> again = InputError(f"Caught InputError in worker 0.\\n{e}\\n{kind_note(e)}")
>>> again.kind, str(again).splitlines()[1]
('truncated_file', 'a.nii.gz: gzip stream ends early. What to do: download the file again')
"""

from __future__ import annotations

import re
from typing import Any

# a kind is a lower-case identifier (``release_corrupt``); a lone argument that is not one is a message
_KIND = re.compile(r"[a-z][a-z0-9_]*")
_KIND_NOTE = "curator error kind: "
_NOTED_KIND = re.compile(rf"^{_KIND_NOTE}({_KIND.pattern})$", re.MULTILINE)


class CuratorError(Exception):
    """Base class of every error curator raises on purpose."""

    default_kind = "error"
    # ``problems`` rows a stage's case collected before this error failed it (see
    # ``curator.runner.stage.with_warnings``); the runner keeps them beside the error's row
    case_problems: tuple[dict[str, Any], ...] = ()

    def __init__(
        self,
        kind: str | None = None,
        message: str = "",
        *,
        path: str | None = None,
        remedy: str | None = None,
        case_id: str | None = None,
    ) -> None:
        if kind and not message and not _KIND.fullmatch(kind):
            # one text, no kind: an error rebuilt from its message (torch's DataLoader re-raises a
            # worker's error as ``type(e)(text)``, the text ending with the original's message and
            # its kind_note); read as a kind, the text would leave the message empty
            noted: list[str] = _NOTED_KIND.findall(kind)
            message, kind = kind, (noted[-1] if noted else None)
        self.kind = kind or self.default_kind
        self.detail = message
        self.path = path
        self.remedy = remedy
        self.case_id = case_id
        super().__init__(self._render())

    def _render(self) -> str:
        text = self.detail
        if self.path:
            text = f"{self.path}: {text}"
        if self.remedy:
            text = f"{text}. What to do: {self.remedy}"
        return text

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across process pools / dask
        # the rest of the instance's attributes go along too: case_problems, notes (add_note)
        state = {k: v for k, v in self.__dict__.items() if k not in _FIELDS}
        return (
            _rebuild,
            (type(self), self.kind, self.detail, self.path, self.remedy, self.case_id),
            state or None,
        )


_FIELDS = frozenset({"kind", "detail", "path", "remedy", "case_id"})


def kind_note(err: CuratorError) -> str:
    """The line that lets an error rebuilt from its text alone (:class:`CuratorError`) know its
    kind again: ``err.add_note(kind_note(err))`` before it crosses to where only its type and
    text arrive (a PyTorch DataLoader worker)."""
    return f"{_KIND_NOTE}{err.kind}"


def _rebuild(
    cls: type[CuratorError],
    kind: str,
    detail: str,
    path: str | None,
    remedy: str | None,
    case_id: str | None,
) -> CuratorError:
    # through the class (not cls.__new__ + __init__): ReadError's two built-in bases (ValueError,
    # OSError) refuse ValueError.__new__(ReadError), so a read error never came back from a worker
    return cls(kind, detail, path=path, remedy=remedy, case_id=case_id)


class ConfigError(CuratorError, ValueError):
    """A pipeline, stage or registry configuration is invalid."""

    default_kind = "config_error"


class RegistryError(ConfigError):
    """A dataset YAML or the taxonomy is invalid."""

    default_kind = "registry_error"


class InputError(CuratorError, ValueError):
    """An input file cannot be used as it is (it becomes a ``problems`` row)."""

    default_kind = "bad_input"


class ReadError(InputError, OSError):
    """A file could not be read at all (missing, empty, truncated, unreadable)."""

    default_kind = "read_error"


class GeometryError(InputError):
    """Spacing, direction or grid agreement is wrong."""

    default_kind = "geometry_error"


class LabelError(InputError):
    """A label map is not what its dataset declares."""

    default_kind = "label_error"


class WorkspaceError(CuratorError, RuntimeError):
    """The workspace is locked, corrupt or out of space."""

    default_kind = "workspace_error"


class ReleaseError(CuratorError, RuntimeError):
    """A release cannot be written, verified or opened."""

    default_kind = "release_error"


class StageError(CuratorError, RuntimeError):
    """A stage stopped (``on_bad_case: error``) or could not run."""

    default_kind = "stage_error"
