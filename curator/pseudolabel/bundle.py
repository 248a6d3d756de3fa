"""What a MONAI bundle may hold before curator parses it: literal values and network classes.

MONAI's ``ConfigParser`` evaluates ``$`` expressions with ``eval`` and calls whatever a
``_target_`` names, so parsing a bundle from elsewhere could run any code; curator parses only
``network_def`` (and what its ``@`` references reach), after :func:`check_network_def`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from torch import nn

from curator.errors import ConfigError

_DOTTED = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def check_network_def(parser: Any, root: Path) -> None:
    """Refuse a bundle whose ``network_def`` would run code of the bundle's choosing when parsed:
    MONAI evaluates ``$`` expressions with ``eval`` and calls whatever ``_target_`` names, so a
    bundle from elsewhere could run a command (``"$__import__('os').system(...)"``, ``_target_:
    subprocess.run``). ``network_def`` and everything its ``@`` references reach may hold only
    literal values and ``_target_`` classes that are networks (``torch.nn.Module`` subclasses)."""
    import pydoc

    from monai.bundle.config_item import ComponentLocator

    where = root / "configs"
    locator = ComponentLocator()

    def refuse(item: str, why: str, remedy: str) -> ConfigError:
        return ConfigError("config_error", f"MONAI bundle {root.name}: {item} {why}", path=str(where), remedy=remedy)

    def check_target(item: str, target: Any) -> None:
        if not (isinstance(target, str) and _DOTTED.fullmatch(target)):
            raise refuse(item, f"has _target_ {str(target)[:80]!r}, not the name of a class",
                         "name the network class, e.g. \"_target_\": \"UNet\" or \"monai.networks.nets.UNet\"")
        module = locator.get_component_module_name(target)
        module = module[0] if isinstance(module, list) else module  # as MONAI takes it
        obj = pydoc.locate(f"{module}.{target}" if module else target)
        if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
            raise refuse(item, f"has _target_ {target!r}, which is not a network class (a subclass of "
                         "torch.nn.Module)", "a bundle's network_def builds networks and their layers only: "
                         "name the class of each (or install the package that defines it)")

    seen: set[str] = set()
    todo = ["network_def"]
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        stack: list[tuple[str, Any]] = [(ref, parser.get(ref))]
        while stack:
            item, node = stack.pop()
            if isinstance(node, dict):
                if "_target_" in node:
                    check_target(item, node["_target_"])
                if node.get("_mode_", "default") != "default":
                    raise refuse(item, f"has _mode_ {str(node['_mode_'])[:40]!r}",
                                 "leave `_mode_` out of network_def: the network is built as its class says")
                stack += [(f"{item}::{k}", v) for k, v in node.items()]
            elif isinstance(node, list):
                stack += [(f"{item}::{i}", v) for i, v in enumerate(node)]
            elif isinstance(node, str) and node.startswith(("$", "%")):
                raise refuse(item, f"is {'an expression' if node[0] == '$' else 'a macro'} ({node[:60]!r}): "
                             "curator does not run code from a model bundle", "write the value in network_def "
                             "literally (numbers, text, lists; `@id` references to such values are fine)")
            elif isinstance(node, str) and node.startswith("@"):
                todo.append(parser.resolve_relative_ids(item, node)[1:])


# MONAI transforms (without their dictionary `d`) that change neither the values nor the grid of a
# one-channel image as curator feeds it (the store is read, not a file): nothing to restate
_NEUTRAL = frozenset({"LoadImage", "EnsureChannelFirst", "AddChannel", "AsChannelFirst", "EnsureType", "ToTensor",
                      "ToNumpy", "CastToType", "ToDevice", "Identity", "CopyItems", "DeleteItems", "SelectItems",
                      "SqueezeDim", "EnsureSameShape"})
NEEDED = ("intensity", "spacing_mm", "orientation")  # a bundle entry's settings curator must know
_MODALITY = {"CT": "CT", "MR": "MR", "MRI": "MR"}


class _Unreadable(Exception):
    """A value of the bundle's config that is not data (a `$` expression, a dangling reference)."""


def _value(parser: Any, item: str, node: Any, depth: int = 0) -> Any:
    """``node`` (the config item ``item``) as plain data: ``@`` references followed, ``$`` literals
    (``"$[1.5, 1.5, 2]"``) read with ``ast.literal_eval``; any other expression is unreadable (never run)."""
    import ast

    if depth > 20:
        raise _Unreadable(f"{item}: references nest too deep")
    if isinstance(node, str) and node.startswith("@"):
        ref = parser.resolve_relative_ids(item, node)[1:]
        try:
            target = parser.get(ref)
        except Exception as e:  # MONAI raises KeyError or ValueError
            raise _Unreadable(f"{item}: reference {node!r} names no item") from e
        if target is None:
            raise _Unreadable(f"{item}: reference {node!r} names no item")
        return _value(parser, ref, target, depth + 1)
    if isinstance(node, str) and node.startswith("$"):
        try:
            return ast.literal_eval(node[1:].strip())
        except (ValueError, SyntaxError) as e:
            raise _Unreadable(f"{item} is an expression ({node[:60]!r}), which curator does not run") from e
    if isinstance(node, str) and node.startswith("%"):
        raise _Unreadable(f"{item} is a macro ({node[:60]!r}), which curator does not follow")
    if isinstance(node, list):
        return [_value(parser, f"{item}#{i}", v, depth) for i, v in enumerate(node)]
    if isinstance(node, dict):
        return {k: _value(parser, f"{item}#{k}", v, depth) for k, v in node.items()}
    return node


def _transforms(parser: Any) -> list[tuple[str, dict[str, Any]]]:
    """The bundle's ``preprocessing`` as (transform name without MONAI's dictionary ``d``, its
    arguments as data), in order; Compose lists given as references (``@x``, ``$@a + @b``) are followed."""
    import re as _re

    node = parser.get("preprocessing")
    if node is None:
        raise _Unreadable("its inference config has no `preprocessing`")
    item = "preprocessing"
    if isinstance(node, dict) and "transforms" in node:
        item, node = "preprocessing#transforms", node["transforms"]
    parts: list[tuple[str, Any]]
    if isinstance(node, str) and _re.fullmatch(r"\$\s*@[\w#]+(\s*\+\s*@[\w#]+)*\s*", node):
        parts = [(item, ref.strip()) for ref in node[1:].split("+")]
    else:
        parts = [(item, node)]
    out: list[tuple[str, dict[str, Any]]] = []
    for where, part in parts:
        if isinstance(part, str) and part.startswith("@"):
            where = parser.resolve_relative_ids(where, part)[1:]
            part = parser.get(where)
        if not isinstance(part, list):
            raise _Unreadable(f"{where} is not a list of transforms ({str(part)[:60]!r})")
        for i, t in enumerate(part):
            here = f"{where}#{i}"
            if isinstance(t, str) and t.startswith("@"):
                here = parser.resolve_relative_ids(here, t)[1:]
                t = parser.get(here)
            if not isinstance(t, dict) or not isinstance(t.get("_target_"), str):
                raise _Unreadable(f"{here} is not a transform with a `_target_`")
            name = t["_target_"].rsplit(".", 1)[-1]
            out.append((name[:-1] if name.endswith("d") and name[:-1] else name,
                        {k: v for k, v in t.items() if k != "_target_"} | {"@": here}))
    return out


def _args(parser: Any, args: dict[str, Any], *keys: str) -> list[Any]:
    return [_value(parser, f"{args['@']}#{k}", args.get(k)) for k in keys]


def _intensity(parser: Any, name: str, args: dict[str, Any]) -> dict[str, Any]:
    """A MONAI intensity transform as curator's ``intensity`` (network input = (clip(x) - mean) / std)."""
    if name == "ScaleIntensityRange":
        a_min, a_max, b_min, b_max, clip = _args(parser, args, "a_min", "a_max", "b_min", "b_max", "clip")
        if not all(isinstance(v, (int, float)) for v in (a_min, a_max)) or a_max == a_min:
            raise _Unreadable(f"{args['@']}: a_min {a_min!r} / a_max {a_max!r} are not two numbers")
        if b_min is None or b_max is None:  # MONAI: (x - a_min) / (a_max - a_min), no clip
            return {"mean": float(a_min), "std": float(a_max - a_min)}
        if not all(isinstance(v, (int, float)) for v in (b_min, b_max)) or b_max == b_min:
            raise _Unreadable(f"{args['@']}: b_min {b_min!r} / b_max {b_max!r} are not two numbers")
        std = (a_max - a_min) / (b_max - b_min)
        if std <= 0:
            raise _Unreadable(f"{args['@']} inverts the intensities (a_max < a_min or b_max < b_min)")
        out = {"mean": float(a_min - b_min * std), "std": float(std)}
        return ({"clip": [float(a_min), float(a_max)]} | out) if clip else out
    # NormalizeIntensity
    sub, div, nonzero = _args(parser, args, "subtrahend", "divisor", "nonzero")
    if sub is None and div is None:  # the image's own mean and std
        return {"zscore": "nonzero" if nonzero else "image"}
    if isinstance(sub, (int, float)) and isinstance(div, (int, float)) and div > 0 and not nonzero:
        return {"mean": float(sub), "std": float(div)}
    raise _Unreadable(f"{args['@']}: NormalizeIntensity with subtrahend {sub!r}, divisor {div!r}, nonzero "
                      f"{nonzero!r} has no curator equivalent")


def read_spec(parser: Any) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """What a bundle's inference config and metadata say about the spec, read as data (nothing is
    parsed into objects, no expression evaluated): ``(settings, {setting: why it cannot be read},
    transforms curator does not apply)``. From ``preprocessing``: ``orientation`` (Orientation(d)
    ``axcodes``; none: the stored axes), ``spacing_mm`` (Spacing(d) ``pixdim``; none: the stored
    grid), ``intensity`` (ScaleIntensityRange(d) → clip/mean/std, NormalizeIntensity(d) → mean/std or
    a z-score; none: the physical values); ``patch`` from the ``inferer``'s ``roi_size`` (else
    metadata's ``spatial_shape`` when it is numbers), ``divisor`` from a ``spatial_shape`` such as
    ``"16*n"``, ``modalities`` from metadata's input ``modality`` (or ``format: hounsfield``: CT)."""
    filled: dict[str, Any] = {}
    unreadable: dict[str, str] = {}
    ignored: list[str] = []
    try:
        transforms = _transforms(parser)
    except _Unreadable as e:
        unreadable = dict.fromkeys(NEEDED, str(e))
        transforms = []
    intensity: list[dict[str, Any]] = []
    oriented = False
    for name, args in ([] if unreadable else transforms):
        try:
            if name == "Orientation":
                (codes,) = _args(parser, args, "axcodes")
                if not (isinstance(codes, str) and len(codes) == 3):
                    raise _Unreadable(f"{args['@']}: axcodes {codes!r} are not three axis codes")
                filled["orientation"] = codes.upper()
                oriented = True
            elif name == "Spacing":
                (pixdim,) = _args(parser, args, "pixdim")
                pix = [pixdim] * 3 if isinstance(pixdim, (int, float)) else pixdim
                if not (isinstance(pix, list) and len(pix) == 3 and all(
                        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in pix)):
                    raise _Unreadable(f"{args['@']}: pixdim {pixdim!r} is not three positive spacings")
                if not oriented and len(set(pix)) > 1:
                    raise _Unreadable(f"{args['@']} comes before any Orientation: its pixdim {pix} is in each "
                                      "file's own axes")
                filled["spacing_mm"] = [float(v) for v in pix]
            elif name in ("ScaleIntensityRange", "NormalizeIntensity"):
                intensity.append(_intensity(parser, name, args))
            elif "Intensity" in name or "Normalize" in name or name.startswith(("Scale", "Threshold", "Clip")):
                raise _Unreadable(f"{args['@']} is {name}, which curator does not apply")
            elif name not in _NEUTRAL:
                ignored.append(name)
        except _Unreadable as e:
            key = "orientation" if name == "Orientation" else "spacing_mm" if name == "Spacing" else "intensity"
            unreadable.setdefault(key, str(e))
    if not transforms and not unreadable:
        unreadable = dict.fromkeys(NEEDED, "its `preprocessing` lists no transforms")
    if "intensity" not in unreadable and transforms:
        if len(intensity) > 1:
            unreadable["intensity"] = "its preprocessing normalises the intensities more than once"
        else:
            filled["intensity"] = intensity[0] if intensity else {"mean": 0.0, "std": 1.0}
    if transforms and not unreadable.get("orientation") and "orientation" not in filled:
        filled["orientation"] = None
    if transforms and not unreadable.get("spacing_mm") and "spacing_mm" not in filled:
        filled["spacing_mm"] = None
    _inferer(parser, filled)
    _metadata(parser, filled)
    return filled, unreadable, ignored


def _inferer(parser: Any, filled: dict[str, Any]) -> None:
    try:
        roi = _value(parser, "inferer#roi_size", parser.get("inferer#roi_size"))
    except _Unreadable:
        roi = None
    if isinstance(roi, list) and len(roi) == 3 and all(isinstance(v, int) and v > 0 for v in roi):
        filled["patch"] = roi


def _metadata(parser: Any, filled: dict[str, Any]) -> None:
    image = parser.get("_meta_#network_data_format#inputs#image") or {}
    if not isinstance(image, dict):
        return
    shape = image.get("spatial_shape")
    if isinstance(shape, list) and len(shape) == 3:
        if "patch" not in filled and all(isinstance(v, int) and v > 0 for v in shape):
            filled["patch"] = shape
        steps = [int(m.group(1)) for v in shape if isinstance(v, str) and (m := _STEP.fullmatch(v.replace(" ", "")))]
        if len(steps) == 3:
            filled["divisor"] = max(steps)
    modality = str(image.get("modality") or "").upper()
    if modality in _MODALITY:
        filled["modalities"] = [_MODALITY[modality]]
    elif str(image.get("format") or "").lower() == "hounsfield":
        filled["modalities"] = ["CT"]


_STEP = re.compile(r"(\d+)\*n")
