"""YAML configs: files that include other files, command-line overrides, interpolation.

Any mapping in a config file may hold ``includes:``, a list of other config files
merged in order beneath it, with the mapping's own keys on top. At the top level
that composes whole configs; deeper down it places a component's file where the
component goes::

    includes: [data/world_coco_caption.yaml]
    model:
      encoder: {includes: [encoders/vit_tiny.yaml]}
      bridge: {includes: [bridges/qformer_tiny.yaml], num_queries: 16}
    run: {max_steps: 200}

An include is looked up next to the including file, then in each directory of
``$VLREG_CONFIG_PATH`` and finally in the repository's ``configs/``. Command-line
overrides are ``key.path=value`` (the value is parsed as YAML) and are applied
last. ``${a.b}`` interpolation and ``${oc.env:VAR}`` work as in OmegaConf.

Only plain data comes out of a config: components are named, never imported by
dotted path, so a config from someone else cannot run code (besides the plugin
modules it lists under ``plugins:``, which must already be installed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import ConfigError

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def search_path() -> list[Path]:
    """Directories searched for included files, after the including file's own."""
    extra = [Path(p) for p in os.environ.get("VLREG_CONFIG_PATH", "").split(os.pathsep) if p]
    return [*extra, REPO_CONFIGS]


def find_config(name: str | os.PathLike, relative_to: Path | None = None) -> Path:
    """Resolve a config file name to an existing path, or raise ConfigError."""
    name = Path(name)
    candidates = [name] if name.is_absolute() else [
        *([relative_to / name] if relative_to is not None else []),
        *(d / name for d in search_path()),
        Path.cwd() / name,
    ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    where = ", ".join(str(c.parent) for c in candidates)
    raise ConfigError(f"config file {str(name)!r} not found (looked in {where})")


def _read_yaml(path: Path) -> dict[str, Any]:
    """A YAML file as plain data, interpolations left as strings."""
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:  # yaml.YAMLError and OmegaConf's own grammar errors
        message = " ".join(str(exc).split())
        raise ConfigError(f"cannot parse config {path}: {message}") from None
    if not OmegaConf.is_dict(cfg):
        raise ConfigError(f"config {path} must be a mapping at the top level")
    return OmegaConf.to_container(cfg, resolve=False)


def _load_with_includes(path: Path, chain: tuple[Path, ...]) -> Any:
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"config includes form a cycle: {cycle}")
    return _expand(_read_yaml(path), path, (*chain, path))


def _expand(node: Any, path: Path, chain: tuple[Path, ...]) -> Any:
    """Merge the files a mapping lists under ``includes:`` beneath it, at any depth.

    Returns plain data for nodes without includes and an OmegaConf node otherwise.
    """
    from omegaconf import OmegaConf

    if isinstance(node, list):
        return [_expand(item, path, chain) for item in node]
    if not isinstance(node, dict):
        return node
    includes = node.pop("includes", None)
    node = {key: _expand(value, path, chain) for key, value in node.items()}
    if includes is None:
        return node
    if not isinstance(includes, list):
        raise ConfigError(f"{path}: includes must be a list of file names, got {includes!r}")
    parts = [_load_with_includes(find_config(inc, path.parent), chain) for inc in includes]
    merged = OmegaConf.merge(*parts, node)
    return OmegaConf.to_container(merged, resolve=False)


def parse_overrides(overrides: Iterable[str]) -> Any:
    """``["run.lr=1e-4", "model.bridge.name=mlp"]`` -> a config to merge on top."""
    from omegaconf import OmegaConf

    overrides = list(overrides)
    for item in overrides:
        key = item.split("=", 1)[0]
        if "=" not in item or not key or key.startswith(".") or key.endswith("."):
            raise ConfigError(f"override {item!r} must have the form key.path=value")
    try:
        return OmegaConf.from_dotlist(overrides)
    except Exception as exc:
        raise ConfigError(f"cannot parse overrides {overrides}: {' '.join(str(exc).split())}") from None


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Any:
    """Load a config file with its includes and overrides, as an OmegaConf DictConfig.

    Interpolations are left in place; :func:`to_plain` resolves them.
    """
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(_load_with_includes(find_config(path), ()))
    if overrides:
        cfg = OmegaConf.merge(cfg, parse_overrides(overrides))
    return cfg


def to_plain(cfg: Any) -> Any:
    """A DictConfig (or plain data) as plain dicts and lists, interpolations resolved."""
    from omegaconf import OmegaConf

    if not OmegaConf.is_config(cfg):
        return cfg
    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except Exception as exc:
        raise ConfigError(f"cannot resolve config: {' '.join(str(exc).split())}") from None


def save_config(cfg: Any, path: str | os.PathLike) -> Path:
    """Write the fully resolved config as YAML (used for a run's output directory)."""
    from omegaconf import OmegaConf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(to_plain(cfg))))
    os.replace(tmp, path)
    return path
