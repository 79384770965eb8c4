"""Runs that can be moved: the paths a run's model names, recorded when it starts, found again when it loads.

A stage's ``config.yaml`` keeps its paths as they were written (``world/backbones/lm/export``,
relative to the directory the run started in). Next to it, ``paths.json`` records that
directory, the run directory, and each key of the model whose value named an existing file
or directory. Loading the run (:func:`vlreg.load_model`, the benchmark suites) looks each
such path up, in order:

1. where it lies relative to the run directory now (``../pformer`` for an earlier stage of the
   same project; ``../../../world/...`` when the whole working directory was moved or copied);
2. where it was (a run directory moved on the same machine);
3. relative to the current directory, then to each directory of ``$VLREG_RUN_PATH``.

A path found nowhere is a one-line error that names the key, what it pointed at, and how to
point at it instead: an override (``load_model(run, overrides=["model.llm.path=/new/place"])``)
or ``$VLREG_RUN_PATH``. Frozen weights are checked against the checksums the checkpoint
recorded in any case (:mod:`vlreg.io.checkpoints`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator, Mapping

from ..errors import ConfigError
from .files import write_json_atomically
from .run_dir import RunDir

ENVIRONMENT = "VLREG_RUN_PATH"
RECORDED = ("model",)
"""The parts of a stage config whose paths are recorded: what loading the run needs."""


def _strings(node: Any, key: tuple = ()) -> Iterator[tuple[tuple, str]]:
    """``(key path, value)`` for every string in a config node."""
    if isinstance(node, Mapping):
        for name, value in node.items():
            yield from _strings(value, (*key, name))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _strings(value, (*key, index))
    elif isinstance(node, str):
        yield key, node


def record_paths(config: Mapping[str, Any], run_dir: Path) -> Path:
    """Write ``<run_dir>/paths.json``: where the run started, where it is, and the model's paths."""
    paths = {".".join(map(str, key)): value for part in RECORDED
             for key, value in _strings(config.get(part), (part,)) if value and Path(value).exists()}
    record = {"started_in": str(Path.cwd()), "run_dir": str(run_dir.resolve()), "paths": paths}
    return write_json_atomically(RunDir(run_dir).paths, record)


def _get(node: Any, key: str) -> Any:
    for part in key.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def _set(node: Any, key: str, value: Any) -> None:
    *parents, last = key.split(".")
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[int(last) if isinstance(node, list) else last] = value


def candidates(value: str, record: Mapping[str, str], run_dir: Path) -> list[Path]:
    """Where a recorded path may be now, in the order they are tried (see the module docstring)."""
    started = Path(record["started_in"])
    was = started / value
    places = [Path(os.path.normpath(run_dir / os.path.relpath(was, record["run_dir"]))), was]
    if was.is_relative_to(started):
        relative = was.relative_to(started)
        extra = [Path(p) for p in os.environ.get(ENVIRONMENT, "").split(os.pathsep) if p]
        places += [Path.cwd() / relative, *(directory / relative for directory in extra)]
    return places


def relocate(config: dict[str, Any], run_dir: str | os.PathLike) -> dict[str, Any]:
    """The stage config of the run in ``run_dir`` with each recorded path where it is now (absolute).

    A key whose value no longer equals the recorded one (an override set it) is left as it is.
    A run without ``paths.json`` (written before vlreg recorded them) is returned unchanged.
    """
    run_dir = Path(run_dir).resolve()
    file = RunDir(run_dir).paths
    if not file.is_file():
        return config
    record = json.loads(file.read_text(encoding="utf-8"))
    for key, value in record["paths"].items():
        if _get(config, key) != value:
            continue
        places = candidates(value, record, run_dir)
        found = next((place for place in places if place.exists()), None)
        if found is None:
            raise ConfigError(
                f"{run_dir}: {key} {value!r} (as the run named it, started in {record['started_in']}) is not found; "
                f"looked at {', '.join(map(str, dict.fromkeys(places)))}. Point at it with an override, "
                f"load_model(run, overrides=['{key}=PATH']), or set ${ENVIRONMENT} to a directory holding {value!r}")
        _set(config, key, str(found.resolve()))
    return config
