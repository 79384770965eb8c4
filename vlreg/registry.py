"""Names to components: one :class:`Registry` per kind, plugins, lazy built-ins.

A component registers itself with a decorator::

    from vlreg import register

    @register("bridge", "gated_projector")
    class GatedProjector(Bridge):
        ...

Built-in components are listed in :mod:`vlreg.builtins` (name -> module) and their
module is imported on the first lookup of one of its names, so ``import vlreg``
stays light. Third-party packages add components through the entry-point group
``vlreg.plugins`` (loaded on the first lookup of any name) or through a config's
``plugins:`` list of modules of installed packages (see :func:`import_plugin_modules`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib
import inspect
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from .errors import DuplicateComponentError, UnknownComponentError, UserError, did_you_mean

KINDS = ("encoder", "bridge", "prompter", "llm", "objective", "dataset", "processor", "task", "runner", "metric",
         "suite")
PLUGIN_GROUP = "vlreg.plugins"


@dataclass
class Entry:
    """One registered name. ``obj`` is None while a built-in waits to be imported."""

    name: str
    module: str
    obj: Any = None
    origin: str = ""

    @property
    def loaded(self) -> bool:
        return self.obj is not None


def _origin(obj: Any) -> str:
    """``module.qualname (file:line)``: where a component was defined."""
    qualname = getattr(obj, "__qualname__", repr(obj))
    where = ""
    try:
        where = f" ({inspect.getsourcefile(obj)}:{inspect.getsourcelines(obj)[1]})"
    except (TypeError, OSError):
        pass
    return f"{getattr(obj, '__module__', '?')}.{qualname}{where}"


class Registry:
    """The registered components of one kind."""

    def __init__(self, kind: str, builtins: dict[str, str] | None = None):
        self.kind = kind
        self._entries: dict[str, Entry] = {
            name: Entry(name, module) for name, module in (builtins or {}).items()
        }

    # -- registration ---------------------------------------------------------
    def register(self, name: str | None = None, obj: Any = None) -> Any:
        """Register ``obj`` under ``name``; without ``obj``, return a decorator.

        ``name`` defaults to the object's ``__name__``. Registering a name that is
        already taken raises :class:`DuplicateComponentError` naming both definitions.
        """
        if obj is None:
            return lambda target: self.register(name, target)
        name = name or obj.__name__
        origin = _origin(obj)
        existing = self._entries.get(name)
        if existing is not None:
            same_builtin = not existing.loaded and existing.module == obj.__module__
            same_definition = existing.loaded and existing.origin == origin
            if not (same_builtin or same_definition):
                first = existing.origin if existing.loaded else f"built-in in module {existing.module}"
                raise DuplicateComponentError(
                    f"{self.kind} {name!r} is registered twice: first by {first}, again by {origin}"
                )
        self._entries[name] = Entry(name, obj.__module__, obj, origin)
        return obj

    # -- lookup ---------------------------------------------------------------
    def get(self, name: str) -> Any:
        """The component registered as ``name``; unknown names list the known ones."""
        load_plugins()
        entry = self._entries.get(name)
        if entry is None:
            known = self.names()
            hint = did_you_mean(name, known)
            failed = "".join(f"; plugin {p} failed to load: {e}" for p, e in _plugin_failures.items())
            raise UnknownComponentError(
                f"unknown {self.kind} {name!r}{hint}. Known {self.kind}s: {', '.join(known) or 'none'}{failed}"
            )
        if not entry.loaded:
            importlib.import_module(entry.module)
            entry = self._entries[name]
            if not entry.loaded:
                raise RuntimeError(
                    f"vlreg.builtins lists {self.kind} {name!r} in {entry.module}, which does not register it"
                )
        return entry.obj

    def name_of(self, obj: Any) -> str | None:
        """The name ``obj`` is registered under (the first, sorted), or None."""
        load_plugins()
        return next((n for n in sorted(self._entries) if self._entries[n].obj is obj), None)

    def build(self, name: str, /, **kwargs: Any) -> Any:
        """Call the component registered as ``name`` with ``kwargs``."""
        return self.get(name)(**kwargs)

    def names(self, pattern: str = "*") -> list[str]:
        """Registered names matching a shell-style wildcard, sorted (``'vit_*'``)."""
        load_plugins()
        return sorted(n for n in self._entries if fnmatch.fnmatchcase(n, pattern))

    list = names

    def summary(self, name: str) -> str:
        """The first line of a component's docstring."""
        doc = inspect.getdoc(self.get(name)) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    def __contains__(self, name: object) -> bool:
        load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} names)"


def _make_registries() -> dict[str, Registry]:
    from .builtins import BUILTINS

    unknown = set(BUILTINS) - set(KINDS)
    if unknown:
        raise RuntimeError(f"vlreg.builtins names unknown kinds {sorted(unknown)}")
    return {kind: Registry(kind, BUILTINS.get(kind)) for kind in KINDS}


REGISTRIES: dict[str, Registry] = _make_registries()


def registry(kind: str) -> Registry:
    """The registry of one kind (``encoder``, ``bridge``, ...)."""
    try:
        return REGISTRIES[kind]
    except KeyError:
        raise UnknownComponentError(
            f"unknown kind {kind!r}{did_you_mean(kind, KINDS)}. Kinds: {', '.join(KINDS)}"
        ) from None


def register(kind: str, name: str | None = None) -> Callable[[Any], Any]:
    """Decorator: ``@register("encoder", "eva_vit_g")``."""
    return registry(kind).register(name)


def get(kind: str, name: str) -> Any:
    """Shorthand for ``registry(kind).get(name)``."""
    return registry(kind).get(name)


def list_components(kind: str | None = None, pattern: str = "*") -> dict[str, list[str]]:
    """``{kind: [names]}`` for one kind or all, filtered by a wildcard pattern."""
    kinds = [kind] if kind else list(KINDS)
    return {k: registry(k).names(pattern) for k in kinds}


# -- plugins ------------------------------------------------------------------
_plugins_loaded = False
_plugin_failures: dict[str, str] = {}


def load_plugins(force: bool = False) -> None:
    """Import every module declared in the ``vlreg.plugins`` entry-point group, once.

    A plugin that fails to import is reported with a warning, and named again in
    the error of any lookup that does not find its name.
    """
    global _plugins_loaded
    if _plugins_loaded and not force:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            loaded = ep.load()
            if callable(loaded) and not inspect.ismodule(loaded):
                loaded()
        except Exception as exc:  # a broken third-party package must not break vlreg
            _plugin_failures[ep.value] = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"vlreg plugin {ep.name} ({ep.value}) failed to load: {exc}", stacklevel=2)


def _local_dirs(config_dir: str | os.PathLike | None) -> list[str]:
    """The directories a config could bring code from: the current one and the config's own."""
    return [os.path.realpath(d) for d in (os.getcwd(), config_dir) if d is not None]


@contextlib.contextmanager
def _import_path(local: list[str], allow_local: bool) -> Iterator[None]:
    """``sys.path`` for importing plugins: without ``local`` directories, or with them first."""
    saved = list(sys.path)
    kept = [p for p in sys.path if os.path.realpath(p or os.curdir) not in local]
    sys.path[:] = [*local, *kept] if allow_local else kept
    try:
        yield
    finally:
        sys.path[:] = saved


def import_plugin_modules(modules: list[str], allow_local: bool = False,
                          config_dir: str | os.PathLike | None = None) -> None:
    """Import the plugin modules a config lists under ``plugins:``.

    Only modules of installed distributions are imported (packages pip installed, with or
    without a ``vlreg.plugins`` entry point), so a config cannot bring code of its own:
    neither the current directory nor the config's directory (``config_dir``) is searched,
    even where ``sys.path`` holds them. ``allow_local`` (``--allow-local-plugins``) lifts
    this: any importable module, those two directories first.
    """
    from importlib.metadata import packages_distributions

    if not isinstance(modules, list):
        raise UserError(f"plugins: must be a list of module names, got {modules!r}")
    local = _local_dirs(config_dir)
    installed = packages_distributions()
    for module in modules:
        if not isinstance(module, str) or not module:
            raise UserError(f"plugins: lists module names, got {module!r}")
        if not allow_local and module.partition(".")[0] not in installed:
            raise UserError(f"plugin module {module!r} listed under plugins: is not part of an installed package, "
                            "and vlreg imports no code from next to a config: install it (pip install), or pass "
                            "--allow-local-plugins to import it from the current or the config's directory")
        try:
            with _import_path(local, allow_local):
                importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name and module.startswith(exc.name):
                raise UserError(f"plugin module {module!r} listed under plugins: cannot be imported: {exc}") from None
            raise
