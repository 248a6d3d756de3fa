"""The tiny-model notebook runs headless from top to bottom (nbclient)."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "train_tiny_model.ipynb"


@pytest.mark.slow
def test_notebook_trains_a_tiny_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the notebook builds its demo under tempfile's folder: keep it in this test's, not in /tmp for good
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOK.parents[1])}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "24 steps" in text and "loss" in text and "validation cases;" in text
