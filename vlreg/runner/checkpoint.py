"""Checkpoints: atomic, self-describing, resumable, with frozen weights referenced by source.

Layout of ``<output_dir>/checkpoints/``::

    frozen.safetensors            frozen weights that have no source file (written once per run)
    step_00000100/
        trainable.safetensors     trainable parameters, and the buffers of trainable modules (full tensors)
        frozen.safetensors        a hard link to the file above (only when some frozen weights have no source)
        state.pt                  optimizer, scheduler, GradScaler, RNG states of every rank, data position,
                                  step, best metric so far (torch.save; loads with weights_only=True)
        manifest.json             which weights each file holds, the frozen weights' sources and checksums,
                                  and the sha256 of each file of this checkpoint
        COMPLETE                  written last, with the manifest's sha256: a directory without it is not a
                                  checkpoint
    best/                         a hard-linked copy of the step directory with the best evaluation
    corrupt-step_…/               a checkpoint whose files no longer match their checksums, moved aside

Atomicity. A checkpoint is written into ``.tmp-step_…``, every file fsynced, the
``COMPLETE`` marker written last, the directory fsynced and then renamed to its
final name. A crash or a full disk at any point leaves the previous checkpoints as
they were; a failed write removes its ``.tmp-`` directory, and the next start removes
any left by a killed one (:func:`remove_unfinished`). On a full disk the error says
how much space the checkpoint needs and how much is free.

Integrity. Resume verifies a checkpoint's files against the checksums its manifest
records (and the manifest against the one in ``COMPLETE``) before it reads them.
``resume: auto`` takes the newest checkpoint that verifies: a damaged newer one is
reported and moved aside to ``corrupt-step_…``. Loading weights into another stage
(``init:``) verifies the same way. After resume, checkpoints beyond
``keep_checkpoints`` (left by a run killed between writing one and rotating) are removed.

Frozen weights: the ``weight_source`` protocol
----------------------------------------------
Frozen weights are not copied into every checkpoint. A module may implement::

    def weight_source(self) -> dict | None:
        '''{"source": hub name or file path, "sha256": checksum of the weight file}, or None.'''

``source`` says where the module's frozen weights were loaded from and ``sha256``
is the checksum of those bytes; compute it once, when loading, as the call must
be cheap. When it returns a dict, the frozen parameters and buffers of that
module's subtree are recorded by source and checksum only. When it returns None
(random weights from a seed, as in tests) or the module does not implement it,
those weights ARE saved, once per run, in ``frozen.safetensors``. Trainable
parameters are always saved, also inside a module that has a source.

A buffer belongs with the weights of the nearest enclosing module that has
parameters: it is trainable state when that module has a trainable parameter,
frozen otherwise.

Resume. The caller rebuilds the model from its config (the frozen parts load
their weights from their sources) and passes it in; :meth:`Checkpointer.load`
then checks, before touching any weight, that the model's sources and checksums
are the ones recorded, that the frozen weights without a source and the
trainable weights in the files have exactly the model's names and shapes
(strict: missing and unexpected keys are both reported, by name), and only then
loads them. A mismatch is a :class:`CheckpointError` naming what differs.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from .. import distributed as collectives
from ..errors import UserError, os_error_in

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


# -- which weights go where ---------------------------------------------------
@dataclass
class WeightLayout:
    """The state-dict keys of a model, sorted into what a checkpoint saves and what it references."""

    trainable: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    sources: dict[str, dict[str, str]] = field(default_factory=dict)


def _inside(path: str, prefixes: Any) -> bool:
    """Whether module ``path`` is one of ``prefixes`` or lies under one ("" is the root)."""
    return any(p == "" or path == p or path.startswith(p + ".") for p in prefixes)


def weight_sources(model: nn.Module) -> dict[str, dict[str, str]]:
    """``{module path: {"source", "sha256"}}`` for every outermost module whose ``weight_source()`` gives one."""
    sources: dict[str, dict[str, str]] = {}
    for name, module in model.named_modules():
        if _inside(name, sources):
            continue
        method = getattr(module, "weight_source", None)
        source = method() if callable(method) else None
        if source is not None:
            if not isinstance(source, dict) or not {"source", "sha256"} <= set(source):
                raise TypeError(f"{type(module).__name__}.weight_source() must return None or "
                                f"{{'source': ..., 'sha256': ...}}, got {source!r}")
            sources[name] = {"source": str(source["source"]), "sha256": str(source["sha256"])}
    return sources


def weight_layout(model: nn.Module) -> WeightLayout:
    """Sort every state-dict key of ``model`` (see the module docstring for the rules)."""
    layout = WeightLayout(sources=weight_sources(model))
    modules = dict(model.named_modules())
    has_trainable = {name: any(p.requires_grad for p in m.parameters()) for name, m in modules.items()}
    has_params = {name: next(m.parameters(), None) is not None for name, m in modules.items()}

    for key, tensor in model.state_dict(keep_vars=True).items():
        owner, _, attribute = key.rpartition(".")
        module = modules[owner]
        if attribute in module._parameters:
            trainable = tensor.requires_grad
        else:  # a buffer: goes with the nearest enclosing module that has parameters
            path = owner
            while not has_params[path] and path:
                path = path.rpartition(".")[0]
            trainable = has_trainable[path]
        if trainable:
            layout.trainable.append(key)
        elif not _inside(owner, layout.sources):
            layout.frozen.append(key)
    return layout


def _full_state(model: nn.Module, keys: list[str], frozen_too: bool) -> dict[str, torch.Tensor]:
    """Full (unsharded) CPU copies of ``keys``, on rank 0 (a collective under FSDP; empty elsewhere)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=not frozen_too)
    state = get_model_state_dict(model, options=options)
    if not collectives.is_main():
        return {}
    wanted, seen, out = set(keys), set(), {}
    for key, tensor in state.items():
        if key not in wanted:
            continue
        tensor = tensor.detach().cpu().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        if pointer in seen or tensor.data_ptr() != pointer or tensor.untyped_storage().nbytes() != tensor.nbytes:
            tensor = tensor.clone()  # safetensors refuses tensors that share or slice storage
        seen.add(pointer)
        out[key] = tensor
    return out


# -- writing files durably ------------------------------------------------------
def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write tensors to ``path`` and fsync it."""
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), metadata={"format": FORMAT})
    except Exception as exc:  # safetensors reports a full disk as its own error
        _raise_os_error(exc, path)
    _fsync_path(path)


def write_state(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` a state dict to ``path`` and fsync it."""
    with open(path, "wb") as f:
        try:
            torch.save(state, f)
        except RuntimeError as exc:  # torch reports a full disk as a RuntimeError
            _raise_os_error(exc, path)
        f.flush()
        os.fsync(f.fileno())


def write_text(text: str, path: Path) -> None:
    """Write text to ``path`` and fsync it."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _raise_os_error(exc: Exception, path: Path) -> None:
    """Raise the OSError behind ``exc`` (naming ``path``), or ``exc`` itself when there is none."""
    found = os_error_in(exc)
    if found is None:
        raise exc
    raise OSError(found.errno, found.strerror, str(path)) from exc


def _describe(exc: OSError, what: str) -> str:
    reason = "no space left on device" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else (exc.strerror or str(exc))
    return f"{what}: {reason}"


def _nbytes(obj: Any) -> int:
    """The bytes of every tensor in a nested structure of dicts, lists and tensors."""
    if isinstance(obj, torch.Tensor):
        return obj.nbytes
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def _size(nbytes: float) -> str:
    """``12.5 MB``: a size in decimal units."""
    for unit in ("bytes", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "bytes" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    raise AssertionError("unreachable")


def _space(needed: int, directory: Path) -> str:
    """``it needs about 12.5 MB, 3.1 MB are free on <directory>``."""
    try:
        free = f", {_size(shutil.disk_usage(directory).free)} are free on {directory}"
    except OSError:
        free = ""
    return f"it needs about {_size(needed)}{free}"


def on_main(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 only; an exception there is raised on every rank (so none waits forever).

    Returns ``fn()``'s result on rank 0 and None elsewhere.
    """
    result, failure = None, None
    if collectives.is_main():
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - re-raised below, on every rank
            failure = exc
    message = collectives.broadcast_object(
        None if failure is None else (isinstance(failure, UserError), f"{type(failure).__name__}: {failure}"))
    if failure is not None:
        raise failure
    if message is not None:
        user, text = message
        raise (CheckpointError if user else RuntimeError)(f"rank 0 failed: {text}")
    return result


# -- finding checkpoints --------------------------------------------------------
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


def _sha256(path: Path) -> str:
    from ..interop.weights import sha256_file

    return sha256_file(path)


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Raise CheckpointError when a file of checkpoint ``path`` is missing or differs from its recorded checksum.

    A checkpoint written before checksums were recorded passes unchecked.
    """
    path = Path(path)
    marker = (path / COMPLETE).read_text(encoding="utf-8")
    recorded = re.search(r"manifest sha256 ([0-9a-f]{64})", marker)
    problem = None
    if recorded and (not (path / MANIFEST_FILE).is_file() or _sha256(path / MANIFEST_FILE) != recorded.group(1)):
        problem = f"{MANIFEST_FILE} differs from the one it was written with"
    else:
        for name, digest in read_manifest(path).get("sha256", {}).items():
            if not (path / name).is_file():
                problem = f"{name} is missing"
            elif _sha256(path / name) != digest:
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
    for directory in (path / "checkpoints", path):
        found = step_checkpoints(directory)
        if found:
            return found[-1][1]
    what = "does not exist" if not path.exists() else "holds no complete checkpoint (no COMPLETE marker)"
    raise CheckpointError(f"no vlreg checkpoint at {path}: it {what}")


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


def _copy_into(model: nn.Module, tensors: dict[str, torch.Tensor], origin: Path) -> None:
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
    found = step_checkpoints(Path(run_dir) / "checkpoints")
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
        return not _inside(key.rpartition(".")[0], exclude)

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
    _copy_into(model, tensors, path)
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


# -- the checkpointer -----------------------------------------------------------
class Checkpointer:
    """Saves, rotates, links and loads the checkpoints of one run directory.

    Every method is called on every rank; rank 0 does the file work and the others
    take part in the collectives (FSDP gathers, error broadcasts).
    """

    def __init__(self, directory: str | os.PathLike, keep: int = 2):
        self.directory = Path(directory)
        self.keep = keep
        self._frozen_ready = False
        if collectives.is_main():
            remove_unfinished(self.directory)

    def latest(self) -> Optional[Path]:
        found = step_checkpoints(self.directory)
        return found[-1][1] if found else None

    def latest_verified(self) -> tuple[Optional[Path], list[str]]:
        """The newest checkpoint whose files verify, and a line for each newer one found damaged (rank 0).

        A damaged checkpoint newer than a sound one is moved aside to ``corrupt-step_…``, so that
        it is neither resumed from nor counted by the rotation; when none verifies, that is a
        CheckpointError and nothing is moved.
        """
        found = step_checkpoints(self.directory)
        damaged: list[tuple[Path, str]] = []
        for _, path in reversed(found):
            try:
                verify_checkpoint(path)
            except CheckpointError as exc:
                damaged.append((path, str(exc)))
                continue
            notes = []
            for bad, reason in damaged:
                aside = bad.with_name(CORRUPT + bad.name)
                shutil.rmtree(aside, ignore_errors=True)
                os.rename(bad, aside)
                notes.append(f"{reason}; moved to {aside.name}, resuming from the newest intact checkpoint {path.name}")
            return path, notes
        if damaged:
            raise CheckpointError(f"no intact checkpoint in {self.directory}: {damaged[0][1]}" +
                                  (f" (and {len(damaged) - 1} more)" if len(damaged) > 1 else "") +
                                  "; restore the files, or move the checkpoints away to start afresh")
        return None, []

    def prune(self) -> None:
        """Remove the oldest step checkpoints beyond ``keep`` (rank 0)."""
        for _, old in step_checkpoints(self.directory)[:-self.keep]:
            shutil.rmtree(old, ignore_errors=True)

    def path(self, step: int) -> Path:
        return self.directory / f"step_{step:08d}"

    # saving
    def save(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> Path:
        """Write checkpoint ``step``: ``model``'s weights, the optimizer's state and ``state`` (a collective).

        ``model`` is the user's model (under FSDP its parameters are sharded; they are
        gathered here). Raises CheckpointError on every rank when the write fails;
        the previous checkpoints are then intact.
        """
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        layout = weight_layout(model)
        trainable = _full_state(model, layout.trainable, frozen_too=False)
        frozen_file = self.directory / FROZEN_FILE
        write_frozen = collectives.broadcast_object(
            bool(layout.frozen) and not (self._frozen_ready and frozen_file.is_file()))
        frozen = _full_state(model, layout.frozen, frozen_too=True) if write_frozen else None
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        optim_state = get_optimizer_state_dict(model, optimizer, options=options)
        final = self.path(step)
        needed = _nbytes(trainable) + _nbytes(optim_state) + _nbytes(frozen)

        def write() -> Path:
            tmp = self.directory / f"{UNFINISHED}{final.name}"
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
                if frozen is not None:
                    self._write_frozen(frozen)
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                write_safetensors(trainable, tmp / TRAINABLE_FILE)
                if layout.frozen:
                    _link_or_copy(frozen_file, tmp / FROZEN_FILE)
                write_state({**state, "step": step, "optimizer": optim_state}, tmp / STATE_FILE)
                files = [TRAINABLE_FILE, *([FROZEN_FILE] if layout.frozen else []), STATE_FILE]
                manifest = {"format": FORMAT, "step": step, "trainable": layout.trainable, "frozen": layout.frozen,
                            "sources": layout.sources,
                            "files": {"trainable": TRAINABLE_FILE, "frozen": FROZEN_FILE if layout.frozen else None,
                                      "state": STATE_FILE},
                            "sha256": {name: _sha256(tmp / name) for name in files}}
                write_text(json.dumps(manifest, indent=1), tmp / MANIFEST_FILE)
                write_text(f"step {step}\nmanifest sha256 {_sha256(tmp / MANIFEST_FILE)}\n", tmp / COMPLETE)
                _fsync_path(tmp)
                if final.exists():
                    shutil.rmtree(final)
                os.rename(tmp, final)
                _fsync_path(self.directory)
            except OSError as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                previous = self.latest()
                kept = (f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists")
                what = _describe(exc, f"cannot write checkpoint {final}")
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    then = " to resume from it" if previous else ""
                    what, kept = f"{what} ({_space(needed, self.directory)})", f"{kept}: free space and run again{then}"
                raise CheckpointError(f"{what}; {kept}") from exc
            self.prune()
            return final

        on_main(write)
        self._frozen_ready = self._frozen_ready or write_frozen
        return final

    def _write_frozen(self, frozen: dict[str, torch.Tensor]) -> None:
        target = self.directory / FROZEN_FILE
        tmp = self.directory / f"{UNFINISHED}{FROZEN_FILE}"
        try:
            write_safetensors(frozen, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def mark_best(self, step: int) -> Path:
        """Make ``best/`` a hard-linked copy of checkpoint ``step`` (replacing the previous best)."""
        best, tmp, old = (self.directory / name for name in ("best", f"{UNFINISHED}best", f"{UNFINISHED}old-best"))

        def link() -> None:
            try:
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(self.path(step), tmp, copy_function=_link_or_copy)
                _fsync_path(tmp)
                if best.exists():
                    os.rename(best, old)
                os.rename(tmp, best)
                shutil.rmtree(old, ignore_errors=True)
                _fsync_path(self.directory)
            except OSError as exc:
                shutil.rmtree(tmp, ignore_errors=True)
                raise CheckpointError(_describe(exc, f"cannot link the best checkpoint to {best}")) from exc

        on_main(link)
        return best

    # loading
    def load(self, path: Path, model: nn.Module) -> dict[str, Any]:
        """Check checkpoint ``path`` against ``model``, load its weights into ``model`` and return its state.

        Rank 0 reads the files and loads the weights (its model is then broadcast by
        the wrapping, so call this before wrapping); every rank gets the state, the
        optimizer's only on rank 0 (:meth:`load_optimizer` broadcasts it).
        """
        path = Path(path)

        def read() -> dict[str, Any]:
            manifest = read_manifest(path)
            manifest["path"] = str(path)
            check_compatible(manifest, weight_layout(model))
            _copy_into(model, read_tensors(path, manifest), path)
            try:
                return torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - a damaged state file is the user's to fix
                raise CheckpointError(f"cannot read {path / STATE_FILE}: {exc}") from None

        state = on_main(read)
        shared = collectives.broadcast_object(None if state is None else {k: v for k, v in state.items() if k != "optimizer"})
        self._frozen_ready = self._frozen_ready or path.parent.resolve() == self.directory.resolve()
        return state if state is not None else shared

    @staticmethod
    def load_optimizer(model: nn.Module, optimizer: torch.optim.Optimizer, optim_state: Optional[dict[str, Any]]) -> None:
        """Load rank 0's full optimizer state into ``optimizer`` on every rank (sharding it under FSDP)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        broadcast = collectives.world_size() > 1
        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=broadcast)
        set_optimizer_state_dict(model, optimizer, optim_state if collectives.is_main() or not broadcast else {},
                                 options=options)
