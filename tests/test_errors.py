"""curator's errors keep their kind, message, path and remedy wherever they travel: pickled to and
from a process pool or Dask worker, and rebuilt from their text alone (PyTorch's DataLoader)."""

from __future__ import annotations

import pickle

import pytest

from curator.errors import (
    ConfigError,
    CuratorError,
    InputError,
    ReadError,
    ReleaseError,
    StageError,
    WorkspaceError,
    kind_note,
)


@pytest.mark.parametrize("cls", [CuratorError, ConfigError, InputError, ReadError, ReleaseError, StageError,
                                 WorkspaceError])
def test_an_error_pickles_whole(cls: type[CuratorError]) -> None:
    e = cls("store_damaged", "a shard is truncated", path="stores/a.zarr", remedy="rebuild it", case_id="A__1")
    e.case_problems = ({"kind": "label_empty"},)
    e.add_note("while reading patch 3")
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is cls and str(back) == str(e) == "stores/a.zarr: a shard is truncated. What to do: rebuild it"
    assert (back.kind, back.detail, back.path, back.remedy, back.case_id) == (
        "store_damaged", "a shard is truncated", "stores/a.zarr", "rebuild it", "A__1")
    assert back.case_problems == e.case_problems and back.__notes__ == ["while reading patch 3"]


def test_the_constructor_keeps_a_kind_given_with_or_without_a_message() -> None:
    assert ReleaseError("release_corrupt", "x").kind == "release_corrupt"
    assert ReleaseError("release_corrupt").kind == "release_corrupt"
    assert ReleaseError().kind == "release_error" and str(ReleaseError()) == ""
    assert InputError(None, "no kind").kind == "bad_input"


def _torch_reraise(e: CuratorError) -> BaseException:
    """What the main process gets of ``e`` raised in a DataLoader worker (torch's ExceptionWrapper)."""
    from torch._utils import ExceptionWrapper

    try:
        raise e
    except CuratorError:
        wrapper = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(BaseException) as got:
        wrapper.reraise()
    return got.value


def test_an_error_rebuilt_from_its_text_keeps_the_message_and_the_kind_it_notes() -> None:
    e = ReleaseError("release_corrupt", "its files differ", path="stores/a.zarr", remedy="run curator verify")
    bare = _torch_reraise(e)  # no kind note: the default kind, never the text as the kind
    assert type(bare) is ReleaseError and bare.kind == "release_error"  # type: ignore[attr-defined]
    assert str(e) in str(bare) and "Caught ReleaseError in DataLoader worker process 0" in str(bare)
    e.add_note(kind_note(e))
    again = _torch_reraise(e)
    assert type(again) is ReleaseError and again.kind == "release_corrupt"  # type: ignore[attr-defined]
    assert str(e) in str(again) and "its files differ" in again.detail  # type: ignore[attr-defined]
    back = pickle.loads(pickle.dumps(again))
    assert (back.kind, str(back)) == ("release_corrupt", str(again))
