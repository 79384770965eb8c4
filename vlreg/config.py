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
``$VLREG_CONFIG_PATH``, then among the recipes that come with vlreg (``configs/``,
``projects/`` and their parent; see :mod:`vlreg.recipes`), and last in the current
directory. A config named on the command line is looked up in the current directory
first, then in the same places; ``.yaml`` may be left out (``pformer/video``).
Command-line overrides are ``key.path=value`` (the value is parsed as YAML) and are
applied last. ``${a.b}`` interpolation and ``${oc.env:VAR}`` work as in OmegaConf.

Only plain data comes out of a config: components are named, never imported by
dotted path, so a config from someone else cannot run code (besides the plugin
modules it lists under ``plugins:``, which must already be installed).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence, Union

from . import recipes
from .errors import ConfigError, did_you_mean
from .yaml_marks import key_lines

YAML = (".yaml", ".yml")


def search_path() -> list[Path]:
    """Directories searched for included files, after the including file's own."""
    extra = [Path(p) for p in os.environ.get("VLREG_CONFIG_PATH", "").split(os.pathsep) if p]
    return [*extra, recipes.configs_dir(), recipes.projects_dir(), recipes.root()]


def find_config(name: str | os.PathLike, relative_to: Path | None = None) -> Path:
    """Resolve a config file name to an existing path, or raise ConfigError.

    ``relative_to``: the including file's directory (for includes); without it the name
    is one given on the command line, which a file in the current directory shadows.
    """
    name = Path(name)
    if name.is_absolute():
        places = [Path("/")]
    elif relative_to is not None:
        places = [relative_to, *search_path(), Path.cwd()]
    else:
        places = [Path.cwd(), *search_path()]
    names = [name] if name.suffix in YAML else [name, name.with_name(name.name + ".yaml")]
    for place in places:
        for candidate in (place / n for n in names):
            if candidate.is_file():
                return candidate.resolve()
    where = ", ".join(dict.fromkeys(str((place / name).parent) for place in places))
    hint = "" if relative_to is not None else "; `vlreg ls` lists the recipes that come with vlreg"
    raise ConfigError(f"config file {str(name)!r} not found (looked in {where}){hint}")


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


Key = tuple[Union[str, int], ...]
Origins = dict[Key, str]
"""Where each key of a config was set: ``{key path: "file:line"}``, or ``"override KEY=VALUE"``."""


class _Composer:
    """Expands ``includes:`` at any depth; with ``track``, records where each key was set (see :data:`Origins`)."""

    def __init__(self, track: bool = False):
        self.track = track

    def load(self, path: Path, chain: tuple[Path, ...] = ()) -> tuple[dict[str, Any], Origins]:
        """A file with its includes merged in, as plain data, and its origins (empty unless tracking)."""
        if path in chain:
            cycle = " -> ".join(str(p) for p in (*chain, path))
            raise ConfigError(f"config includes form a cycle: {cycle}")
        lines = key_lines(path) if self.track else {}
        return self._expand(_read_yaml(path), path, (*chain, path), lines, ())

    def _expand(self, node: Any, path: Path, chain: tuple[Path, ...], lines: dict[Key, int],
                here: Key) -> tuple[Any, Origins]:
        """``node`` (at key path ``here`` of file ``path``) with the files it lists under ``includes:``
        merged beneath it, and the origins of its keys, relative to it."""
        from omegaconf import OmegaConf

        if isinstance(node, dict):
            includes, items = node.pop("includes", None), list(node.items())
        elif isinstance(node, list):
            includes, items = None, list(enumerate(node))
        else:
            return node, {}
        values, origins = [], {}
        for key, value in items:
            value, inner = self._expand(value, path, chain, lines, (*here, key))
            values.append(value)
            if self.track:
                line = lines.get((*here, key))
                origins[(key,)] = f"{path}:{line}" if line else str(path)
                origins.update({(key, *k): v for k, v in inner.items()})
        data = dict(zip((key for key, _ in items), values)) if isinstance(node, dict) else values
        if includes is None:
            return data, origins
        if not isinstance(includes, list):
            raise ConfigError(f"{path}: includes must be a list of file names, got {includes!r}")
        parts = [self.load(find_config(inc, path.parent), chain) for inc in includes]
        merged = OmegaConf.to_container(OmegaConf.merge(*(part for part, _ in parts), data), resolve=False)
        return merged, _merge_origins([*parts, (data, origins)]) if self.track else {}


def _merge_origins(parts: Sequence[tuple[Any, Origins]]) -> Origins:
    """The origins of mappings merged in order (what ``OmegaConf.merge`` does): a later mapping's keys win,
    and a value that is not a mapping (a list too) replaces whatever was below its key."""
    merged: Origins = {}
    for data, origins in parts:
        replaced = list(_values(data))
        merged = {k: v for k, v in merged.items() if not any(k[:len(r)] == r and len(k) > len(r) for r in replaced)}
        merged.update(origins)
    return merged


def _values(node: Any, here: Key = ()) -> Iterable[Key]:
    """The key paths of a mapping's values that are not mappings, at any depth."""
    for key, value in node.items():
        if isinstance(value, dict):
            yield from _values(value, (*here, key))
        else:
            yield (*here, key)


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


PROJECT_KEYS = ("name", "description", "output_dir", "vars", "plugins", "stages")
"""The keys of a project itself (:class:`vlreg.pipeline.ProjectNode` types them); others belong to its stages."""


def _stage_keys(plain: Any, key: str, item: str, selected: Sequence[str]) -> list[str]:
    """The keys an override sets: in a project, ``STAGE.key`` is that stage's key, ``all.key`` every stage's,
    and a key that is not the project's the key of each stage chosen with ``--stage`` (``selected``);
    in a config of one stage, ``all.key`` is ``key``."""
    head, _, rest = key.partition(".")
    names = _stage_names(plain)
    if names is None:
        return [rest] if head == "all" and rest else [key]
    if rest and head in names:
        return [f"stages.{names.index(head)}.{rest}"]
    if rest and head == "all":
        return [f"stages.{i}.{rest}" for i in range(len(names))]
    if head in PROJECT_KEYS:
        return [key]
    if selected:
        return [f"stages.{names.index(name)}.{key}" for name in selected]
    raise ConfigError(f"override {item!r}: {head!r} is neither a stage{did_you_mean(head, map(str, names))} nor a "
                      f"key of the project; stages: {', '.join(map(str, names))}. Set a stage's key as "
                      "STAGE.key=value (stage1.run.lr=1e-4), every stage's as all.key=value")


def _stage_names(plain: Any) -> Optional[list[Any]]:
    """The names of a project's stages (None for a config that is not a project)."""
    stages = plain.get("stages") if isinstance(plain, dict) else None
    if not isinstance(stages, list):
        return None
    return [stage.get("name") if isinstance(stage, dict) else None for stage in stages]


def _check_stages(plain: Any, chosen: Sequence[str]) -> None:
    """A ConfigError, listing the stages, when a project has no stage of a name in ``chosen``."""
    names = [str(name) for name in _stage_names(plain) or ()]
    for name in chosen if names else ():
        if name not in names:
            raise ConfigError(f"unknown stage {name!r}{did_you_mean(name, names)}; stages: {', '.join(names)}")


def _resolve_key(plain: Any, key: str, value: Any, item: str) -> Key:
    """``key`` as a key path into ``plain``, list items addressed by position or by their ``name``.

    A ConfigError when it leads nowhere (past a value, to no item of a list) or ``value`` would
    replace a mapping with a list or a list with a mapping.
    """
    node, where = plain, []
    for part in key.split("."):
        if isinstance(node, list):
            names = [x.get("name") if isinstance(x, dict) else None for x in node]
            if part in names:
                part = names.index(part)
            elif not part.isdigit() or int(part) >= len(node):
                span = f"0 to {len(node) - 1}" if node else "none: it is empty"
                named = f" or by name ({', '.join(map(str, names))})" if any(names) else ""
                raise ConfigError(f"override {item!r}: {'.'.join(map(str, where))} is a list; address its items "
                                  f"by position ({span}){named}")
            node = node[int(part)]
            where.append(int(part))
        elif isinstance(node, dict) or node is None:
            node = node.get(part) if node is not None else None
            where.append(part)
        else:
            raise ConfigError(f"override {item!r}: {'.'.join(map(str, where))} is a value ({node!r}), not a mapping")
    for kind, example in ((dict, "{key: value}"), (list, "[...]")):
        if isinstance(node, kind) and isinstance(value, (dict, list)) and not isinstance(value, kind):
            raise ConfigError(f"override {item!r}: {key} is a {'mapping' if kind is dict else 'list'}; give one "
                              f"({example}) or set what is inside it ({key}.{'key' if kind is dict else '0'}=...)")
    return tuple(where)


def _record_override(origins: Origins, key: Key, value: Any, label: str) -> None:
    """Mark ``key`` (and what ``value`` puts below it) as set by an override."""
    if not isinstance(value, dict):
        for old in [k for k in origins if k[:len(key)] == key]:
            del origins[old]
    origins[key] = label
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for child, inner in children:
        _record_override(origins, (*key, child), inner, label)


def apply_overrides(cfg: Any, overrides: Iterable[str], stages: Sequence[str] = (),
                    origins: Origins | None = None) -> Any:
    """Apply ``key.path=value`` overrides to a DictConfig, in order, and return it.

    A mapping value merges into the mapping it replaces (``model.bridge={name: mlp}``
    keeps the bridge's other keys); list items are addressed by position or by the
    ``name`` of the mapping they hold (``stages.1.run.lr=1e-4``, ``stages.stage1.run.lr=1e-4``).
    In a project, ``STAGE.key=value`` sets a key of one stage (``stage2.run.max_steps=50``),
    ``all.key=value`` of every stage, and a key that is not the project's that of each stage
    in ``stages`` (those chosen with ``--stage``). Any mistake (an unknown stage, a list where
    a mapping is, an item that does not exist, a key below a plain value) is a one-line
    ConfigError. ``origins``, when given, records each override as where its keys were set.
    """
    from omegaconf import OmegaConf

    _check_stages(OmegaConf.to_container(cfg, resolve=False), stages)
    for item in overrides:
        key, value = parse_override(item)
        plain = OmegaConf.to_container(cfg, resolve=False)
        for target in _stage_keys(plain, key, item, stages):
            path = _resolve_key(plain, target, value, item)
            try:
                OmegaConf.update(cfg, ".".join(map(str, path)), value, merge=True, force_add=True)
            except Exception as exc:
                raise ConfigError(f"override {item!r}: {one_line(exc)}") from None
            if origins is not None:
                _record_override(origins, path, value, f"override {item}")
    return cfg


def load_config(path: str | os.PathLike, overrides: Sequence[str] = (), stages: Sequence[str] = ()) -> Any:
    """Load a config file with its includes and overrides, as an OmegaConf DictConfig.

    ``stages``: the stages a project's bare overrides set (see :func:`apply_overrides`).
    Interpolations are left in place; :func:`to_plain` resolves them.
    """
    return trace_config(path, overrides, stages, track=False)[0]


def trace_config(path: str | os.PathLike, overrides: Sequence[str] = (), stages: Sequence[str] = (),
                 track: bool = True) -> tuple[Any, Origins]:
    """:func:`load_config`, and where each key was set (see :data:`Origins`; empty without ``track``)."""
    from omegaconf import OmegaConf

    plain, origins = _Composer(track).load(find_config(path))
    return apply_overrides(OmegaConf.create(plain), overrides, stages, origins if track else None), origins


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
