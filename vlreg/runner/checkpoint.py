"""Writing checkpoints during training: atomic, rotated, resumable (the format: :mod:`vlreg.io.checkpoints`).

Atomicity. A checkpoint is written into ``.tmp-step_…``, every file fsynced, the
``COMPLETE`` marker written last, the directory fsynced and then renamed to its
final name. A crash or a full disk at any point leaves the previous checkpoints as
they were; a failed write removes its ``.tmp-`` directory, and the next start removes
any left by a killed one (:func:`~vlreg.io.checkpoints.remove_unfinished`). On a full
disk the error says how much space the checkpoint needs and how much is free.

Resume. ``resume: auto`` takes the newest checkpoint that verifies: a damaged newer
one is reported and moved aside to ``corrupt-step_…``. After resume, checkpoints
beyond ``keep_checkpoints`` (left by a run killed between writing one and rotating)
are removed. Frozen weights with a source are referenced, not copied
(:mod:`vlreg.io.sources`); :meth:`Checkpointer.load` checks them against the model
before loading anything.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch import nn

from .. import distributed as collectives
from ..errors import UserError
from ..io.checkpoints import (COMPLETE, CORRUPT, FORMAT, FROZEN_FILE, MANIFEST_FILE, STATE_FILE, TRAINABLE_FILE,
                              UNFINISHED, CheckpointError, check_compatible, copy_into, read_manifest, read_tensors,
                              remove_unfinished, step_checkpoints, verify_checkpoint)
from ..io.files import fsync_path, link_or_copy, raise_os_error, write_text_durably
from ..io.fingerprints import sha256_file
from ..io.sources import weight_layout
from ..io.weights import write_weights


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


def write_state(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` a state dict to ``path`` and fsync it."""
    with open(path, "wb") as f:
        try:
            torch.save(state, f)
        except RuntimeError as exc:  # torch reports a full disk as a RuntimeError
            raise_os_error(exc, path)
        f.flush()
        os.fsync(f.fileno())


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
                write_weights(trainable, tmp / TRAINABLE_FILE, metadata={"format": FORMAT})
                if layout.frozen:
                    link_or_copy(frozen_file, tmp / FROZEN_FILE)
                write_state({**state, "step": step, "optimizer": optim_state}, tmp / STATE_FILE)
                files = [TRAINABLE_FILE, *([FROZEN_FILE] if layout.frozen else []), STATE_FILE]
                manifest = {"format": FORMAT, "step": step, "trainable": layout.trainable, "frozen": layout.frozen,
                            "sources": layout.sources,
                            "files": {"trainable": TRAINABLE_FILE, "frozen": FROZEN_FILE if layout.frozen else None,
                                      "state": STATE_FILE},
                            "sha256": {name: sha256_file(tmp / name) for name in files}}
                write_text_durably(json.dumps(manifest, indent=1), tmp / MANIFEST_FILE)
                write_text_durably(f"step {step}\nmanifest sha256 {sha256_file(tmp / MANIFEST_FILE)}\n", tmp / COMPLETE)
                fsync_path(tmp)
                if final.exists():
                    shutil.rmtree(final)
                os.rename(tmp, final)
                fsync_path(self.directory)
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
            write_weights(frozen, tmp, metadata={"format": FORMAT})
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)

    def mark_best(self, step: int) -> Path:
        """Make ``best/`` a hard-linked copy of checkpoint ``step`` (replacing the previous best)."""
        best, tmp, old = (self.directory / name for name in ("best", f"{UNFINISHED}best", f"{UNFINISHED}old-best"))

        def link() -> None:
            try:
                shutil.rmtree(tmp, ignore_errors=True)
                shutil.copytree(self.path(step), tmp, copy_function=link_or_copy)
                fsync_path(tmp)
                if best.exists():
                    os.rename(best, old)
                os.rename(tmp, best)
                shutil.rmtree(old, ignore_errors=True)
                fsync_path(self.directory)
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
            copy_into(model, read_tensors(path, manifest), path)
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
