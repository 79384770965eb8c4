"""The recipes that come with vlreg: component configs, projects and benchmark suites.

In a source checkout they are the repository's top-level ``configs/``, ``projects/`` and
``benchmarks/suites/``. A built package (wheel, ``pip install .``) carries copies of them
inside itself, under ``vlreg/_recipes/`` with the same layout (``setup.py`` copies them at
build time), so an installed vlreg finds its recipes from any directory; an editable
install reads the checkout's own.

A project is named by its path under ``projects/`` without ``.yaml`` (``pformer/video``);
the folders ``stages/`` and ``models/`` hold the parts projects include, not projects.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

from .errors import ConfigError, did_you_mean
from .yaml_marks import include_spans

PARTS = ("stages", "models")
"""Folders of included parts: what they hold are not projects."""

_PACKAGED = Path(__file__).resolve().with_name("_recipes")
_CHECKOUT = Path(__file__).resolve().parent.parent


def root() -> Path:
    """The directory holding ``configs/``, ``projects/`` and ``benchmarks/suites/``."""
    return _PACKAGED if _PACKAGED.is_dir() else _CHECKOUT


def configs_dir() -> Path:
    return root() / "configs"


def projects_dir() -> Path:
    return root() / "projects"


def suites_dir() -> Path:
    return root() / "benchmarks" / "suites"


def projects() -> dict[str, Path]:
    """Every project recipe, ``{name: file}`` sorted by name (``pformer/video``: ``projects/pformer/video.yaml``)."""
    base = projects_dir()
    found = {}
    for path in sorted(base.rglob("*.yaml")):
        relative = path.relative_to(base)
        if not set(PARTS) & set(relative.parts[:-1]):
            found[relative.with_suffix("").as_posix()] = path
    return found


def describe(path: Path) -> str:
    """A recipe's one-line description: its first comment line up to the details after a colon
    ("BLIP-2 stage 1 at paper scale (Li et al., 2023): EVA ViT-g frozen, ..." -> its title)."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") and line.strip("# "):
            return line.lstrip("#").strip().split(": ")[0].rstrip(":.")
        if line.strip() and not line.startswith("#"):
            break
    return ""


def find_project(name: str) -> Optional[Path]:
    """The project recipe ``name`` (``pformer/video``, with or without ``.yaml``), or None."""
    return projects().get(name[:-5] if name.endswith(".yaml") else name)


def require_project(name: str) -> Path:
    """:func:`find_project`, or a ConfigError that names the closest recipes."""
    found = find_project(name)
    if found is None:
        known = list(projects())
        raise ConfigError(f"no recipe {name!r}{did_you_mean(name, known)}; `vlreg ls` lists them")
    return found


def copy_project(name: str, destination: str | os.PathLike) -> Path:
    """Copy a project recipe to ``destination`` (a file, or a directory to copy into) to edit it.

    The copy includes the same files: an include that the recipe names relative to its own
    folder (``stages/stage1.yaml`` in ``blip2/stage1``) is rewritten as the path under
    ``projects/`` (``blip2/stages/stage1.yaml``), which the include search finds from
    anywhere. Comments and layout are kept. An existing file is not replaced.
    """
    source = require_project(name)
    target = Path(destination)
    if target.is_dir():
        target = target / source.name
    if target.exists():
        raise ConfigError(f"{target} exists; choose another name or remove it first")
    text = source.read_text(encoding="utf-8")
    base = projects_dir()
    for start, end, include in reversed(include_spans(source)):
        beside = (source.parent / include).resolve()
        if beside.is_file() and beside.is_relative_to(base):
            text = text[:start] + beside.relative_to(base).as_posix() + text[end:]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    shutil.copymode(source, target)
    return target
