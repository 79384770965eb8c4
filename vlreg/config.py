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
import re
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


def one_line(exc: BaseException) -> str:
    """An exception's message on one line; OmegaConf's as ``key: message``."""
    message = getattr(exc, "msg", None) or str(exc)
    key = getattr(exc, "full_key", None)
    return " ".join((f"{key}: {message}" if key else message).split())


def parse_override(item: str) -> tuple[str, Any]:
    """``"run.lr=1e-4"`` -> ``("run.lr", 0.0001)``: the value is YAML, interpolations are kept."""
    from omegaconf import OmegaConf

    key, equals, value = item.partition("=")
    if not equals or not key or key.startswith(".") or key.endswith(".") or ".." in key:
        raise ConfigError(f"override {item!r} must have the form key.path=value")
    try:
        parsed = OmegaConf.to_container(OmegaConf.from_dotlist([f"value={value}"]), resolve=False)
    except Exception as exc:
        raise ConfigError(f"cannot parse override {item!r}: {one_line(exc)}") from None
    return key, parsed["value"]


def _check_override(plain: Any, key: str, value: Any, item: str) -> None:
    """Raise ConfigError when ``key`` leads nowhere in ``plain`` (past a value, to no item of a list) or
    ``value`` would replace a mapping with a list or a list with a mapping."""
    node, where = plain, []
    for part in key.split("."):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                named = [i for i, x in enumerate(node) if isinstance(x, dict) and x.get("name") == part]
                hint = f" ({part} is {'.'.join([*where, str(named[0])])})" if named else ""
                span = f"0 to {len(node) - 1}" if node else "none: it is empty"
                raise ConfigError(f"override {item!r}: {'.'.join(where)} is a list; address its items by "
                                  f"position ({span}){hint}")
            node = node[int(part)]
        elif isinstance(node, dict):
            if part not in node:
                return  # a new key; the validation of the config judges it
            node = node[part]
        else:
            raise ConfigError(f"override {item!r}: {'.'.join(where)} is a value ({node!r}), not a mapping")
        where.append(part)
    for kind, example in ((dict, "{key: value}"), (list, "[...]")):
        if isinstance(node, kind) and isinstance(value, (dict, list)) and not isinstance(value, kind):
            raise ConfigError(f"override {item!r}: {key} is a {'mapping' if kind is dict else 'list'}; "
                              f"give one ({example}) or set what is inside it ({key}.{'key' if kind is dict else '0'}=...)")


def apply_overrides(cfg: Any, overrides: Iterable[str]) -> Any:
    """Apply ``key.path=value`` overrides to a DictConfig, in order, and return it.

    A mapping value merges into the mapping it replaces (``model.bridge={name: mlp}``
    keeps the bridge's other keys); list items are addressed by position
    (``stages.1.run.lr=1e-4``). Any other mistake (a list where a mapping is, an
    item that does not exist, a key below a plain value) is a one-line ConfigError.
    """
    from omegaconf import OmegaConf

    for item in overrides:
        key, value = parse_override(item)
        _check_override(OmegaConf.to_container(cfg, resolve=False), key, value, item)
        try:
            OmegaConf.update(cfg, key, value, merge=True, force_add=True)
        except Exception as exc:
            raise ConfigError(f"override {item!r}: {one_line(exc)}") from None
    return cfg


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> Any:
    """Load a config file with its includes and overrides, as an OmegaConf DictConfig.

    Interpolations are left in place; :func:`to_plain` resolves them.
    """
    from omegaconf import OmegaConf

    return apply_overrides(OmegaConf.create(_load_with_includes(find_config(path), ())), overrides)


def to_plain(cfg: Any, complete: bool = False) -> Any:
    """A DictConfig (or plain data) as plain dicts and lists, interpolations resolved.

    With ``complete``, a value left as ``???`` (one a config leaves for the user to set)
    is a ConfigError that names it.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    if not OmegaConf.is_config(cfg):
        return cfg
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=complete)
    except MissingMandatoryValue as exc:
        key = re.sub(r"\[(\d+)\]", r".\1", str(exc.full_key))
        raise ConfigError(f"{key} is ??? (a value the config leaves for you to set): set it in the config or "
                          f"on the command line ({key}=...)") from None
    except Exception as exc:
        raise ConfigError(f"cannot resolve config: {one_line(exc)}") from None


_ENV = "${oc.env:"


def _escape_env(text: str) -> str:
    """``text`` with each ``${oc.env:...}`` escaped, so that it resolves to its own text."""
    out, i = [], 0
    while (start := text.find(_ENV, i)) >= 0:
        depth, end = 0, start
        while end < len(text):
            if text.startswith("${", end):
                depth, end = depth + 1, end + 2
                continue
            depth, end = depth - (text[end] == "}"), end + 1
            if depth == 0:
                break
        out += [text[i:start], "\\", text[start:end]]
        i = end
    return "".join(out) + text[i:]


def without_env(cfg: Any) -> Any:
    """A copy of ``cfg`` in which ``${oc.env:VAR}`` stays the interpolation instead of the variable's value.

    What a run saves as its ``config.yaml``: secrets passed through the environment stay out
    of it, and reading the file back resolves them from the environment again.
    """
    from omegaconf import OmegaConf

    def escape(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: escape(value) for key, value in node.items()}
        if isinstance(node, list):
            return [escape(value) for value in node]
        return _escape_env(node) if isinstance(node, str) and _ENV in node else node

    return OmegaConf.create(escape(OmegaConf.to_container(cfg, resolve=False)))


def save_config(cfg: Any, path: str | os.PathLike, comment: str = "") -> Path:
    """Write the fully resolved config as YAML (used for a run's output directory).

    ``comment`` (e.g. what ``precision: auto`` resolved to on this machine) heads the file as
    ``#`` lines, which reading the file back ignores.
    """
    from omegaconf import OmegaConf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    header = "".join(f"# {line}\n" for line in comment.splitlines())
    tmp.write_text(header + OmegaConf.to_yaml(OmegaConf.create(to_plain(cfg))))
    os.replace(tmp, path)
    return path
