"""Execute notebooks in place with nbclient (refreshes their stored outputs).

    python notebooks/execute.py notebooks/query_release.ipynb

The tests execute the same notebooks without writing them (tests/notebooks/).
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def execute(path: Path, timeout: int = 600) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        p = Path(arg)
        nbformat.write(execute(p), p)
        sys.stderr.write(f"executed {p}\n")
