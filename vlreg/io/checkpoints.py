"""The vlreg checkpoint format: finding, verifying and reading checkpoints, and loading their weights.

Layout of a run's ``checkpoints/`` (written by :class:`vlreg.runner.checkpoint.Checkpointer`)::

    frozen.safetensors            frozen weights that have no source file (written once per run)
    step_00000100/
        trainable.safetensors     trainable parameters, and the buffers of trainable modules (full tensors)
        frozen.safetensors        a hard link to the file above (only when some frozen weights have no source)
        state.pt                  optimizer, scheduler, GradScaler, RNG states of every rank, data position,
                                  step, best metric so far (torch.save; loads with weights_only=True)
        manifest.json             which weights each file holds, the frozen weights' sources and checksums
                                  (vlreg.io.sources), and the sha256 of each file of this checkpoint
        COMPLETE                  written last, with the manifest's sha256: a directory without it is not a
                                  checkpoint
    best/                         a hard-linked copy of the step directory with the best evaluation
    corrupt-step_…/               a checkpoint whose files no longer match their checksums, moved aside
    .tmp-…                        what an interrupted write left (removed by the next start)

Integrity. A checkpoint's files are verified against the checksums its manifest
records (and the manifest against the one in ``COMPLETE``) before they are read
(:func:`verify_checkpoint`).

Loading. The caller rebuilds the model from its config (the frozen parts load their
weights from their sources) and passes it in; :func:`load_weights` then checks, before
touching any weight, that the model's sources and checksums are the ones recorded, that
the weights in the files have the model's names and shapes, and only then loads them.
A mismatch is a :class:`CheckpointError` naming what differs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..errors import UserError
from .fingerprints import sha256_file
from .run_dir import RunDir
from .sources import WeightLayout, inside, weight_layout

FORMAT = "vlreg-checkpoint/1"
COMPLETE = "COMPLETE"
TRAINABLE_FILE = "trainable.safetensors"
FROZEN_FILE = "frozen.safetensors"
STATE_FILE = "state.pt"
MANIFEST_FILE = "manifest.json"
UNFINISHED = ".tmp-"
CORRUPT = "corrupt-"
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(UserError):
    """A checkpoint cannot be written, found, or does not match the model."""


def is_complete(path: Path) -> bool:
    return (Path(path) / COMPLETE).is_file()


def remove_unfinished(directory: str | os.PathLike) -> None:
    """Remove what interrupted writes left in a checkpoints directory (``.tmp-*``)."""
    directory = Path(directory)
    if not directory.is_dir():
        return
    for stale in directory.glob(f"{UNFINISHED}*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Raise CheckpointError when a file of checkpoint ``path`` is missing or differs from its recorded checksum.

    A checkpoint written before checksums were recorded passes unchecked.
    """
    path = Path(path)
    marker = (path / COMPLETE).read_text(encoding="utf-8")
    recorded = re.search(r"manifest sha256 ([0-9a-f]{64})", marker)
    problem = None
    if recorded and (not (path / MANIFEST_FILE).is_file() or sha256_file(path / MANIFEST_FILE) != recorded.group(1)):
        problem = f"{MANIFEST_FILE} differs from the one it was written with"
    else:
        for name, digest in read_manifest(path).get("sha256", {}).items():
            if not (path / name).is_file():
                problem = f"{name} is missing"
            elif sha256_file(path / name) != digest:
                problem = f"{name} does not match its recorded checksum (changed or truncated)"
            if problem:
                break
    if problem:
        raise CheckpointError(f"checkpoint {path} is damaged: {problem}")


def step_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of every complete ``step_N`` checkpoint in ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = []
    for child in directory.iterdir():
        match = _STEP_DIR.match(child.name)
        if match and is_complete(child):
            found.append((int(match.group(1)), child))
    return sorted(found)


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A complete checkpoint directory from a path to one, to a ``checkpoints/`` folder or to a run directory."""
    path = Path(path)
    if is_complete(path):
        return path
    for directory in (RunDir(path).checkpoints, path):
        found = step_checkpoints(directory)
        if found:
            return found[-1][1]
    what = "does not exist" if not path.exists() else "holds no complete checkpoint (no COMPLETE marker)"
    raise CheckpointError(f"no vlreg checkpoint at {path}: it {what}")


def is_run_checkpoint(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a vlreg checkpoint directory, a ``checkpoints/`` folder or a run directory."""
    path = Path(path)
    return is_complete(path) or RunDir(path).checkpoints.is_dir() or bool(step_checkpoints(path))


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((Path(path) / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {Path(path) / MANIFEST_FILE}: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} checkpoint (format {manifest.get('format')!r})")
    return manifest


def _listing(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def check_compatible(manifest: dict[str, Any], layout: WeightLayout) -> None:
    """Raise CheckpointError naming every difference between a checkpoint and the model's weights."""
    problems = []
    for kind, saved, current in (("trainable", manifest["trainable"], layout.trainable),
                                 ("frozen (saved)", manifest["frozen"], layout.frozen)):
        missing = sorted(set(current) - set(saved))
        unexpected = sorted(set(saved) - set(current))
        if missing:
            problems.append(f"{kind} weights of the model missing from the checkpoint: {_listing(missing)}")
        if unexpected:
            problems.append(f"{kind} weights in the checkpoint that the model does not have: {_listing(unexpected)}")
    recorded, current = manifest["sources"], layout.sources
    for prefix in sorted(set(recorded) | set(current)):
        old, new = recorded.get(prefix), current.get(prefix)
        name = prefix or "<model>"
        if old is None:
            problems.append(f"frozen weights of {name!r} now come from {new['source']}, "
                            "but the checkpoint was made without a source for them")
        elif new is None:
            problems.append(f"frozen weights of {name!r} came from {old['source']} (sha256 {old['sha256'][:12]}), "
                            "but the model now has no weight source for them")
        elif old["sha256"] != new["sha256"]:
            problems.append(f"frozen weights of {name!r} differ: the checkpoint was trained on {old['source']} "
                            f"(sha256 {old['sha256'][:12]}), the model now loads {new['source']} "
                            f"(sha256 {new['sha256'][:12]})")
    if problems:
        raise CheckpointError(f"checkpoint {manifest.get('path', '')} does not match the model: " + "; ".join(problems))


def read_tensors(path: Path, manifest: Optional[dict[str, Any]] = None) -> dict[str, torch.Tensor]:
    """Every tensor a checkpoint holds (trainable and frozen-without-source), by state-dict name."""
    from safetensors.torch import load_file

    manifest = manifest or read_manifest(path)
    tensors: dict[str, torch.Tensor] = {}
    for name in [TRAINABLE_FILE, *([FROZEN_FILE] if manifest["frozen"] else [])]:
        try:
            tensors.update(load_file(Path(path) / name))
        except Exception as exc:  # noqa: BLE001 - truncated or foreign bytes are the user's to fix
            raise CheckpointError(f"cannot read {Path(path) / name}: {' '.join(str(exc).split())}; the checkpoint "
                                  "is damaged") from None
    return tensors


def copy_into(model: nn.Module, tensors: dict[str, torch.Tensor], origin: Path) -> None:
    """Copy ``tensors`` into ``model``'s parameters and buffers, after checking every shape."""
    current = model.state_dict(keep_vars=True)
    wrong = [f"{k} {tuple(v.shape)} vs model {tuple(current[k].shape)}"
             for k, v in tensors.items() if tuple(v.shape) != tuple(current[k].shape)]
    if wrong:
        raise CheckpointError(f"{origin}: shapes differ from the model's: {_listing(wrong)}")
    with torch.no_grad():
        for key, value in tensors.items():
            current[key].copy_(value)


def final_checkpoint(run_dir: str | os.PathLike) -> Optional[Path]:
    """The newest complete checkpoint of a run directory (``<run_dir>/checkpoints/step_N``), or None."""
    found = step_checkpoints(RunDir(run_dir).checkpoints)
    return found[-1][1] if found else None


def load_weights(model: nn.Module, path: str | os.PathLike, prefix: str = "", exclude: tuple[str, ...] = (),
                 strict: bool = True, ignore_unexpected: bool = False) -> list[str]:
    """Load the weights of a checkpoint into ``model``: for inference, or to start a stage from an earlier one.

    No optimizer or run state is touched. ``path`` is a checkpoint directory or a
    run directory (its newest checkpoint). Only the checkpoint's keys under
    ``prefix`` are used, with the prefix removed (``prefix="bridge."`` loads a
    bridge into a bridge). Module paths in ``exclude`` (relative to ``model``) are
    neither loaded nor required (``exclude=("prompter",)`` reads a checkpoint
    trained with a P-Former into a model without one).

    Checked: keys of the checkpoint that ``model`` lacks (an error), shapes (an
    error), frozen weights the checkpoint references by source against
    ``model``'s own ``weight_source()`` (an error when the checksums differ), and
    weights ``model`` would need that the checkpoint does not hold (an error when
    ``strict``; returned otherwise). With ``ignore_unexpected``, checkpoint keys the
    model lacks are skipped instead (a stage-2 Q-Former started from a stage-1 one,
    whose text branch it drops).
    """
    path = resolve_checkpoint(path)
    verify_checkpoint(path)
    manifest = read_manifest(path)

    def wanted(key: str) -> bool:
        return not inside(key.rpartition(".")[0], exclude)

    tensors = {k[len(prefix):]: v for k, v in read_tensors(path, manifest).items() if k.startswith(prefix)}
    tensors = {k: v for k, v in tensors.items() if wanted(k)}
    layout = weight_layout(model)
    own = model.state_dict(keep_vars=True)
    unexpected = sorted(set(tensors) - set(own))
    if ignore_unexpected:
        tensors = {k: v for k, v in tensors.items() if k in own}
    elif unexpected:
        raise CheckpointError(f"{path} holds weights that the model does not have: {_listing(unexpected)}")
    for module, recorded in manifest["sources"].items():
        if not module.startswith(prefix.rstrip(".")):
            continue
        module = module[len(prefix):]
        current = layout.sources.get(module)
        if current is not None and current["sha256"] != recorded["sha256"]:
            raise CheckpointError(f"{path} was trained with frozen weights {recorded['source']} for {module!r} "
                                  f"(sha256 {recorded['sha256'][:12]}), the model loads {current['source']} "
                                  f"(sha256 {current['sha256'][:12]})")
    missing = sorted(k for k in [*layout.trainable, *layout.frozen] if k not in tensors and wanted(k))
    if missing and strict:
        raise CheckpointError(f"{path} lacks weights the model needs: {_listing(missing)} (frozen weights that "
                              "the checkpoint references by source must be loaded by the model itself)")
    copy_into(model, tensors, path)
    return missing


def load_component_weights(model: nn.Module, role: str, path: str | os.PathLike, strict: bool = True,
                           ignore_unexpected: bool = False) -> list[str]:
    """Load component ``role`` (``model.<role>``, e.g. ``bridge``) from a checkpoint of another run.

    The checkpoint must hold weights under ``<role>.``; see :func:`load_weights`.
    """
    component = getattr(model, role, None)
    if not isinstance(component, nn.Module):
        raise CheckpointError(f"the model has no component {role!r} to load from {path}")
    checkpoint = resolve_checkpoint(path)
    manifest = read_manifest(checkpoint)
    if not any(k.startswith(f"{role}.") for k in [*manifest["trainable"], *manifest["frozen"]]):
        raise CheckpointError(f"{checkpoint} holds no weights of {role!r}")
    return load_weights(component, checkpoint, prefix=f"{role}.", strict=strict, ignore_unexpected=ignore_unexpected)
