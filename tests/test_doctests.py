"""Every example in curator's docstrings runs and prints what it says.

The module docstrings show how each piece is called (``>>>`` examples); nothing ran them, and
three had drifted from the code (SAT's 1/√N dataset weights shown as 1/N, a float32 mean
printed to the last digit, a NumPy bool shown as ``True``).
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest

import curator

ROOT = Path(curator.__file__).resolve().parent
# every .py file (curator.dedup and curator.runner are namespace packages, which pkgutil skips)
MODULES = sorted(".".join(("curator", *p.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
                 for p in ROOT.rglob("*.py") if p.name != "__main__.py" and "__pycache__" not in p.parts)


def test_the_modules_are_found() -> None:
    assert len(MODULES) > 150 and {"curator.dedup.search", "curator.runner.stage", "curator"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    try:
        module = importlib.import_module(name)
    except ImportError as e:  # an optional extra (e.g. MONAI for the MONAI export) not installed
        pytest.skip(f"{name} needs an optional dependency: {e}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=False,
                             verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples in {name} failed (above)"
