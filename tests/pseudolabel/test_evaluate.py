"""``evaluate_layers``: unknown layers/terms and requests that compare nothing are clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from curator.errors import ConfigError
from curator.pseudolabel.evaluate import evaluate_layers
from curator.store import CaseStore
from curator.testing.segmodels import phantom_truth, write_phantom_store


def _workspace(tmp_path: Path, *, revised: bool = False) -> Path:
    """Two phantom stores annotating the spleen, pseudo labels for the liver only (as the stage
    writes them: terms the dataset leaves out), optionally a reviewer's revised liver."""
    ws = tmp_path / "ws"
    (ws / "stores").mkdir(parents=True)
    for i, cid in enumerate(("MSD_Spleen__spleen_1", "MSD_Spleen__spleen_2")):
        store = write_phantom_store(ws / "stores" / f"{cid}.zarr", 200 + i, {"spleen": 1})
        liver = phantom_truth(200 + i, "liver")
        store.write_layer("pseudo", [(liver.astype(np.uint8), {1: ["liver"]})])
        if revised:
            store.write_layer("revised", [(liver.astype(np.uint8), {1: ["liver"]})])
    return ws


def test_unknown_layer_or_term_is_a_config_error_naming_valid_ones(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    with pytest.raises(ConfigError, match=r"'nonexistent' is not a label layer.*original, revised, pseudo"):
        evaluate_layers(ws, "nonexistent", "original")
    with pytest.raises(ConfigError, match=r"did you mean 'original'"):
        evaluate_layers(ws, "pseudo", "orignal")
    with pytest.raises(ConfigError, match=r"'not_a_term' is not a term id.*liver, spleen"):
        evaluate_layers(ws, "pseudo", "original", terms=["not_a_term"])
    with pytest.raises(ConfigError, match=r"did you mean kidney_left"):
        evaluate_layers(ws, "pseudo", "original", terms=["left_kidney"])


def test_nothing_compared_says_why_and_what_to_compare(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    with pytest.raises(ConfigError, match=r"no case holds a term in both the 'pseudo' and the 'original'") as e:
        evaluate_layers(ws, "pseudo", "original")
    assert "does not annotate" in str(e.value) and "--pred pseudo --ref revised" in str(e.value)
    assert "curator review import" in str(e.value)

    ws = _workspace(tmp_path / "b", revised=True)
    rows = evaluate_layers(ws, "pseudo", "revised")
    assert [(r["case_id"], r["term_id"], r["dice"]) for r in rows] == [
        ("MSD_Spleen__spleen_1", "liver", 1.0), ("MSD_Spleen__spleen_2", "liver", 1.0)]
    with pytest.raises(ConfigError, match=r"no case holds spleen in both.*share liver: give some of these"):
        evaluate_layers(ws, "pseudo", "revised", terms=["spleen"])
    assert CaseStore(ws / "stores" / "MSD_Spleen__spleen_1.zarr").layers() == ["original", "revised", "pseudo"]
