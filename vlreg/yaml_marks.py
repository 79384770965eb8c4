"""Where things are in a YAML file: the line of each key and the characters of each include.

PyYAML's composed nodes carry the marks (line, column, character offset) where they start
and end in the text. Walking them gives, for every key path of the file, the line that sets
it: what ``vlreg config --where`` reports, and where ``vlreg cp`` rewrites includes.
A ``<<: *anchor`` merge counts as set where the anchor's keys were written, unless the
mapping sets the key itself; an ``*alias`` as set where its anchor was.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Union

Key = tuple[Union[str, int], ...]


def _compose(path: str | os.PathLike) -> tuple[Any, Any]:
    """The loader (for merge keys) and the root node of a file, or None for an empty or unparsable one."""
    import yaml

    loader = yaml.SafeLoader(Path(path).read_text(encoding="utf-8"))
    try:
        return loader, loader.get_single_node()
    except yaml.YAMLError:
        return loader, None
    finally:
        loader.dispose()


def _entries(loader: Any, node: Any, key: Key) -> Iterator[tuple[Key, Any, Any]]:
    """``(key path, node that names it, value node)`` for every entry below ``node``, outermost first."""
    import yaml

    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)  # resolves `<<` merges in place; later pairs override earlier ones
        for name, value in node.value:
            inner = (*key, str(name.value))
            yield inner, name, value
            yield from _entries(loader, value, inner)
    elif isinstance(node, yaml.SequenceNode):
        for index, value in enumerate(node.value):
            yield (*key, index), value, value
            yield from _entries(loader, value, (*key, index))


def key_lines(path: str | os.PathLike) -> dict[Key, int]:
    """``{key path: line}`` (1-based) for every mapping key and list item the file sets."""
    loader, node = _compose(path)
    return {key: named.start_mark.line + 1 for key, named, _ in _entries(loader, node, ())}


def include_spans(path: str | os.PathLike) -> list[tuple[int, int, str]]:
    """``(start, end, name)``: the character span of each file name listed under an ``includes:`` key."""
    import yaml

    loader, node = _compose(path)
    spans = {(item.start_mark.index, item.end_mark.index, str(item.value))
             for key, _, value in _entries(loader, node, ()) if key[-1] == "includes"
             and isinstance(value, yaml.SequenceNode) for item in value.value if isinstance(item, yaml.ScalarNode)}
    return sorted(spans)
