"""Where the bundled data lives: ``label_system/`` and ``manifests/``.

In a source checkout (or an editable install) they sit next to the ``curator`` package;
in a wheel they are bundled under ``curator/_bundled/``. Resolved when used, never at import.
"""

from __future__ import annotations

import os
from pathlib import Path

from curator.errors import ConfigError

_PKG = Path(__file__).resolve().parent


def resource_dir(name: str) -> Path:
    """The folder of a bundled resource (``'label_system'`` or ``'manifests'``)."""
    env = os.environ.get(f"CURATOR_{name.upper()}_DIR")
    candidates = [Path(env)] if env else []
    candidates += [_PKG.parent / name, _PKG / "_bundled" / name]
    for c in candidates:
        if c.is_dir():
            return c
    raise ConfigError("config_error", f"cannot find the bundled {name!r} folder (looked in "
                      f"{[str(c) for c in candidates]}); reinstall curator")
