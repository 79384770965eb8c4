"""Config nodes to objects, checked against the constructors they name.

A component node is ``{name: <registered name>, **constructor_kwargs}``. Before
anything is built, every key is checked against the constructor's signature:
an unknown key is an error that names it, the component and the valid keys; a
value whose type contradicts an annotation is an error too. Arguments annotated
with :func:`component` are themselves nodes of another kind and are validated
and built recursively; arguments annotated with a dataclass take a mapping of
its fields::

    class VideoEncoder(Encoder):
        def __init__(self, frame_encoder: component("encoder"), num_frames: int = 8): ...
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import os
import types
import typing
from dataclasses import dataclass
from typing import Any, Annotated, Callable, Literal, Mapping

from .config import to_plain
from .errors import ConfigError, did_you_mean
from .registry import registry


@dataclass(frozen=True)
class Kind:
    """Annotation marker: this argument is a config node of a registered kind."""

    kind: str


def component(kind: str, base: Any = Any) -> Any:
    """The annotation of a constructor argument that is a component of ``kind``."""
    return Annotated[base, Kind(kind)]


@dataclass(frozen=True)
class Check:
    """Annotation marker: ``test(value, where)`` raises ConfigError when a config's value is wrong."""

    test: Callable[[Any, str], None]


def checked(base: Any, test: Callable[[Any, str], None]) -> Any:
    """The annotation of an argument of type ``base`` whose configured value ``test`` also checks."""
    return Annotated[base, Check(test)]


def at_least(minimum: float, base: Any = int) -> Any:
    """The annotation of a number that must be at least ``minimum`` (``image_size: at_least(1) = 224``)."""

    def test(value: Any, where: str) -> None:
        if value < minimum:
            raise ConfigError(f"{where}: must be at least {minimum}, got {value!r}")

    return checked(base, test)


Positive = at_least(1)
"""The annotation of a count or a size: an int of at least 1."""


@dataclass
class Param:
    name: str
    annotation: Any
    required: bool


def parameters(target: Callable) -> tuple[dict[str, Param], bool]:
    """The keyword parameters of a class or function, and whether it takes ``**kwargs``."""
    func = target.__init__ if inspect.isclass(target) else target
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception:  # unresolvable forward references: check keys, not types
        hints = {}
    sig = inspect.signature(target)
    params: dict[str, Param] = {}
    var_kw = False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            var_kw = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            params[p.name] = Param(p.name, hints.get(p.name, Any), p.default is p.empty)
    return params, var_kw


def _kind_of(annotation: Any) -> str | None:
    if typing.get_origin(annotation) is Annotated:
        for meta in annotation.__metadata__:
            if isinstance(meta, Kind):
                return meta.kind
    return None


def _strip(annotation: Any) -> Any:
    return typing.get_args(annotation)[0] if typing.get_origin(annotation) is Annotated else annotation


def _union_members(annotation: Any) -> tuple | None:
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(annotation)
    return None


def _type_name(annotation: Any) -> str:
    members = _union_members(annotation)
    if members is not None:
        return " or ".join(_type_name(m) for m in members if m is not type(None))
    if typing.get_origin(annotation) is not None:
        return str(annotation).replace("typing.", "")
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def check_value(value: Any, annotation: Any, where: str) -> None:
    """Raise ConfigError when ``value`` cannot be an ``annotation``; recurse into nodes."""
    checks = [m for m in getattr(annotation, "__metadata__", ()) if isinstance(m, Check)]
    if checks:
        check_value(value, _strip(annotation), where)
        for check in checks:
            check.test(value, where)
        return
    kind = _kind_of(annotation)
    if kind is not None:
        if isinstance(value, Mapping):
            validate(kind, value, where)
            return
        if isinstance(value, str):
            validate(kind, {"name": value}, where)
            return
        raise ConfigError(f"{where}: expected a {kind} node {{name: ..., ...}}, got {value!r}")
    annotation = _strip(annotation)
    if annotation is Any or annotation is inspect.Parameter.empty or isinstance(annotation, (str, typing.ForwardRef)):
        return
    members = _union_members(annotation)
    if members is not None:
        errors = []
        for member in members:
            try:
                check_value(value, member, where)
                return
            except ConfigError as exc:
                errors.append(str(exc))
        # a single non-None member explains the failure best
        real = [m for m in members if m is not type(None)]
        if len(real) == 1:
            raise ConfigError(errors[members.index(real[0])])
        raise ConfigError(f"{where}: expected {_type_name(annotation)}, got {type(value).__name__} {value!r}")
    origin = typing.get_origin(annotation)
    if origin is Literal:
        if value not in typing.get_args(annotation):
            choices = ", ".join(repr(a) for a in typing.get_args(annotation))
            raise ConfigError(f"{where}: expected one of {choices}, got {value!r}")
        return
    if annotation is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected null, got {value!r}")
        return
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping of {annotation.__name__} fields, got {value!r}")
        check_args(annotation, value, where, f"{annotation.__name__}")
        return
    if origin in (list, tuple, collections.abc.Sequence) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        args = typing.get_args(annotation)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
            for i, (item, arg) in enumerate(zip(value, args)):
                check_value(item, arg, f"{where}[{i}]")
        elif args:
            for i, item in enumerate(value):
                check_value(item, args[0], f"{where}[{i}]")
        return
    if origin in (dict, collections.abc.Mapping) or annotation is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__} {value!r}")
        args = typing.get_args(annotation)
        if len(args) == 2:
            for k, item in value.items():
                check_value(item, args[1], f"{where}.{k}")
        return
    if annotation is bool:
        ok = isinstance(value, bool)
    elif annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif annotation is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif annotation is str:
        ok = isinstance(value, str)
    elif annotation in (os.PathLike,) or getattr(annotation, "__name__", "") in ("Path", "PurePath"):
        ok = isinstance(value, (str, os.PathLike))
    elif isinstance(annotation, type):
        ok = isinstance(value, annotation)
    else:
        return
    if not ok:
        raise ConfigError(f"{where}: expected {_type_name(annotation)}, got {type(value).__name__} {value!r}")


def check_args(target: Callable, args: Mapping[str, Any], where: str, label: str, provided: tuple[str, ...] = ()) -> None:
    """Check a mapping of keyword arguments against ``target``'s signature."""
    params, var_kw = parameters(target)
    for key, value in args.items():
        here = f"{where}.{key}" if where else key
        if key not in params:
            if var_kw:
                continue
            valid = ", ".join(sorted(params)) or "none"
            raise ConfigError(
                f"{where or 'config'}: unknown key {key!r} for {label}{did_you_mean(key, params)}; valid keys: {valid}"
            )
        check_value(value, params[key].annotation, here)
    missing = [n for n, p in params.items() if p.required and n not in args and n not in provided]
    if missing:
        raise ConfigError(f"{where or 'config'}: {label} needs {', '.join(repr(m) for m in missing)}")


def _split(kind: str, node: Any, where: str) -> tuple[str, dict[str, Any]]:
    node = to_plain(node)
    if isinstance(node, str):
        node = {"name": node}
    if not isinstance(node, Mapping) or "name" not in node:
        raise ConfigError(f"{where or kind}: a {kind} node needs a 'name' (one of: {', '.join(registry(kind).names())})")
    args = dict(node)
    name = args.pop("name")
    if not isinstance(name, str):
        raise ConfigError(f"{where or kind}.name: expected a registered {kind} name, got {name!r}")
    return name, args


def validate(kind: str, node: Any, where: str = "", provided: tuple[str, ...] = ()) -> None:
    """Check a component node and every node nested in it, building nothing.

    ``provided`` names arguments the caller will supply (they are not required here).
    """
    name, args = _split(kind, node, where)
    target = registry(kind).get(name)
    check_args(target, args, where, f"{kind} {name!r}", provided)


def call(target: Callable, args: Mapping[str, Any], where: str, label: str, defaults: Mapping[str, Any] | None = None) -> Any:
    """Call ``target`` with checked ``args``, building nested nodes and dataclasses first.

    ``defaults`` fill arguments the node does not set, where ``target`` accepts them.
    """
    params, var_kw = parameters(target)
    defaults = {k: v for k, v in (defaults or {}).items() if k in params or var_kw}
    check_args(target, args, where, label, tuple(defaults))
    kwargs = {**defaults}
    for key, value in args.items():
        kwargs[key] = _materialise(value, params[key].annotation if key in params else Any, f"{where}.{key}" if where else key)
    return target(**kwargs)


def _materialise(value: Any, annotation: Any, where: str) -> Any:
    kind = _kind_of(annotation)
    if kind is not None and isinstance(value, (Mapping, str)):
        return build(kind, value, where)
    inner = _strip(annotation)
    members = _union_members(inner)
    if members is not None and value is not None:
        for member in members:
            if member is type(None):
                continue
            try:
                check_value(value, member, where)
            except ConfigError:
                continue
            return _materialise(value, member, where)
    if dataclasses.is_dataclass(inner) and isinstance(inner, type) and isinstance(value, Mapping):
        return call(inner, value, where, inner.__name__)
    if typing.get_origin(inner) in (list, collections.abc.Sequence) and isinstance(value, (list, tuple)):
        (item,) = typing.get_args(inner) or (Any,)
        return [_materialise(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def build(kind: str, node: Any, where: str = "", defaults: Mapping[str, Any] | None = None) -> Any:
    """Build the component a node names, after checking every key of it."""
    name, args = _split(kind, node, where)
    target = registry(kind).get(name)
    return call(target, args, where, f"{kind} {name!r}", defaults)
