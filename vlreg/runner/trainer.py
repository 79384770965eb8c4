"""The training loop: ``Trainer(config).fit(model, task, train_dataset, eval_dataset)``.

One optimizer step, on every rank::

    for each of accum_steps micro-batches:          (gradient sync only on the last)
        out = task.train_step(model, batch)          under autocast
        (out["loss"] / accum_steps).backward()       (scaled by the GradScaler in fp16)
    unscale (fp16); measure the global gradient norm; clip it to grad_clip
    if the loss (on any rank) or, without a GradScaler, the gradient norm is NaN/inf:
        skip: no update, gradients zeroed, the step counted as skipped
    else: optimizer step
    the schedule advances; the step counter advances either way

then, when due: a metrics line, an evaluation (best-metric selection), a checkpoint.
"""

from __future__ import annotations

import gc
import math
import time
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional

import torch
from torch import nn

from .. import distributed as collectives
from ..device import cpu_threads, resolve_precision
from ..errors import ConfigError, UserError
from ..registry import register
from ..tasks.base import Task
from ..io.checkpoints import read_manifest, resolve_checkpoint, step_checkpoints, verify_checkpoint
from ..io.files import write_json_atomically
from ..io.run_dir import RunDir
from .checkpoint import Checkpointer, on_main
from .config import RunConfig
from .context import EvalContext, autocast
from .data import TrainStream, to_device
from .distributed_setup import TaskStep, full_tensor, gathered_parameters, gradient_sync, setup_distributed, wrap
from .logging import MetricsLog, Progress, format_record
from .optim import WarmupCosine, build_optimizer, complete_groups, parameter_groups
from .seeding import mix, preserved_rng, rng_state, seed_all, set_deterministic, set_rng_state

class NonFiniteLossError(UserError):
    """The loss was NaN or inf for too many optimizer steps in a row."""


def _loss_of(outputs: Any, task: Any) -> torch.Tensor:
    if not isinstance(outputs, Mapping) or not isinstance(outputs.get("loss"), torch.Tensor):
        got = sorted(outputs) if isinstance(outputs, Mapping) else type(outputs).__name__
        raise TypeError(f"{type(task).__name__}.train_step must return a dict with a 'loss' tensor, got {got}")
    return outputs["loss"]


class _Window:
    """Sums of what a metrics line reports, since the last line.

    Checkpoints hold it, so that the first line after a resume averages the same steps
    as an uninterrupted run's (those before the interruption included).
    """

    def __init__(self) -> None:
        self.values: dict[str, torch.Tensor] = {}
        self.steps, self.wait, self.elapsed = 0, 0.0, 0.0
        self.grad_norm = 0.0

    def add(self, outputs: dict[str, torch.Tensor], grad_norm: float, wait: float, elapsed: float) -> None:
        for key, value in outputs.items():
            self.values[key] = self.values.get(key, 0.0) + value
        self.steps += 1
        self.wait += wait
        self.elapsed += elapsed
        self.grad_norm += grad_norm

    def state_dict(self) -> dict[str, Any]:
        return {"values": {k: float(v) for k, v in self.values.items()}, "steps": self.steps, "wait": self.wait,
                "elapsed": self.elapsed, "grad_norm": self.grad_norm}

    def load_state_dict(self, state: dict[str, Any], device: torch.device) -> None:
        self.values = {k: torch.tensor(v, device=device) for k, v in state["values"].items()}
        self.steps, self.wait, self.elapsed, self.grad_norm = (state[k] for k in ("steps", "wait", "elapsed",
                                                                                   "grad_norm"))


@register("runner", "trainer")
class Trainer:
    """Trains a model with a task on one process or many (see :mod:`vlreg.runner`)."""

    def __init__(self, config: RunConfig | Mapping[str, Any]):
        if not isinstance(config, RunConfig):
            from ..build import call

            config = call(RunConfig, dict(config), "run", "run")
        self.config = config

    # -- the run ------------------------------------------------------------------
    def fit(self, model: nn.Module, task: Task, train_dataset: Any, eval_dataset: Any = None) -> dict[str, Any]:
        """Train ``model`` on ``train_dataset`` with ``task``; evaluate on ``eval_dataset``.

        Without a training set (``None``) the model is only evaluated: no optimizer,
        no checkpoint. Returns the results also written to ``<output_dir>/results.json`` (see :class:`~vlreg.io.run_dir.RunDir`).
        """
        if not isinstance(task, Task):
            raise TypeError(f"Trainer.fit: the task must be a vlreg.tasks.base.Task, got {type(task).__name__}")
        cfg = self.config
        self.started = time.perf_counter()
        env = self.env = setup_distributed()
        if cfg.precision == "fp16" and env.device.type != "cuda":
            raise ConfigError("run.precision fp16 needs a CUDA GPU (it uses a GradScaler); use auto or bf16 on CPU")
        self.precision_choice = resolve_precision(cfg.precision, env.device)
        self.precision = self.precision_choice.precision
        threads = ""
        if env.device.type == "cpu":
            count, why = cpu_threads(cfg.threads)
            torch.set_num_threads(count)
            threads = f"; {count} thread{'s' if count > 1 else ''} ({why})"
        if env.is_main:
            print(f"[vlreg] precision {self.precision_choice.describe()}{threads}", flush=True)
        self.output_dir = Path(cfg.output_dir)
        self.run_dir = RunDir(self.output_dir)
        seed_all(cfg.seed + env.rank)
        set_deterministic(cfg.deterministic)
        self.model, self.task = model, task
        self.step, self.skipped, self.in_row, self.time_before = 0, 0, 0, 0.0
        self.window = _Window()
        self.best: dict[str, Any] = {"metric": cfg.best_metric, "value": None, "step": None}
        self.final_metrics: dict[str, float] = {}
        self.last_eval_step = self.last_saved_step = -1
        self.checkpoints = Checkpointer(self.run_dir.checkpoints, cfg.keep_checkpoints)
        model.to(env.device)
        self.wrapped, self.optimizer, self.stream, self.total_steps = model, None, None, 0
        resume_from = self._prepare_training(train_dataset) if train_dataset is not None else None

        self.log = MetricsLog(self.output_dir, enabled=env.is_main,
                              resume_step=self.step if resume_from is not None else None)
        self.progress = Progress(self.total_steps, initial=self.step, enabled=env.is_main)
        if resume_from is not None:
            self.progress.message(f"resumed from {resume_from} at step {self.step}")
        try:
            if self.stream is not None:
                self._loop(eval_dataset)
            if eval_dataset is not None and self.last_eval_step != self.step:
                self._evaluate_and_keep(eval_dataset, final=True)
            elif self.optimizer is not None and self.last_saved_step != self.step:
                self._save()
            results = self._results(resume_from, [task, train_dataset, eval_dataset])
        finally:
            self.progress.close()
            self.log.close()
            if self.stream is not None:
                self.stream.close()
            # a DDP reducer that outlives the process group aborts the process at exit
            self.wrapped = None
            gc.collect()
        if env.is_main:
            write_json_atomically(self.run_dir.results, results)
        return results

    def _prepare_training(self, train_dataset: Any) -> Optional[Path]:
        """Resume weights, wrap, build optimizer, data stream and schedule; restore a checkpoint's state.

        Returns the checkpoint resumed from, if any.
        """
        cfg, env, model, task = self.config, self.env, self.model, self.task
        micro_batch = cfg.micro_batch_size(env.world_size)
        resume_from = self._resume_path()
        state = self.checkpoints.load(resume_from, model) if resume_from is not None else None
        self.wrapped = wrap(TaskStep(model, task).train(), cfg.distributed, env, cfg.find_unused_parameters)
        groups = task.parameter_groups(model)
        groups = complete_groups(groups, cfg.weight_decay) if groups is not None else parameter_groups(
            model, cfg.weight_decay, cfg.layer_decay)
        self.optimizer = build_optimizer(groups, cfg.lr, cfg.betas, cfg.eps)
        self.params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.stream = TrainStream(train_dataset, micro_batch, cfg.accum_steps, env.world_size, env.rank, cfg.seed,
                                  cfg.num_workers, task.collate, pin_memory=env.device.type == "cuda")
        self.total_steps = self._total_steps()
        self.schedule = WarmupCosine(self.optimizer, cfg.lr, self.total_steps, cfg.warmup_steps, cfg.warmup_start_lr,
                                     cfg.min_lr)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        if state is not None:
            self._restore(state)
            self.last_saved_step = self.step
        return resume_from

    def _loop(self, eval_dataset: Any) -> None:
        cfg = self.config
        steps_per_epoch = self.stream.steps_per_epoch
        pending = False
        while self.step < self.total_steps:
            began = time.perf_counter()
            outputs, grad_norm, ok, wait = self._optimizer_step()
            self.step += 1
            self.window.add(outputs, grad_norm, wait, time.perf_counter() - began)
            self.progress.advance(self.step)
            if not ok:
                self._note_nonfinite()
            else:
                self.in_row = 0
            if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                self._log_window(self.window)
                self.window = _Window()
            epoch_end = steps_per_epoch is not None and self.step % steps_per_epoch == 0
            if cfg.max_epochs is not None:
                eval_due = epoch_end and cfg.eval_every is not None and (self.step // steps_per_epoch) % cfg.eval_every == 0
            else:
                eval_due = cfg.eval_every is not None and self.step % cfg.eval_every == 0
            if eval_dataset is not None and eval_due and self.step < self.total_steps:
                self._evaluate_and_keep(eval_dataset)
            # no checkpoint inside a run of non-finite steps: the last good one must stay the newest
            pending = pending or (cfg.checkpoint_every > 0 and self.step % cfg.checkpoint_every == 0)
            if pending and self.in_row == 0:
                if self.last_saved_step != self.step:
                    self._save()
                pending = False

    def _optimizer_step(self) -> tuple[dict[str, torch.Tensor], float, bool, float]:
        """Accumulate, clip, step (or skip). Returns the micro-batch means of the task's
        outputs, the gradient norm, whether the step was applied, and the seconds spent waiting for data."""
        cfg, env = self.config, self.env
        accum = cfg.accum_steps
        outputs: dict[str, torch.Tensor] = {}
        wait = 0.0
        for micro in range(accum):
            fetch = time.perf_counter()
            batch = to_device(self.stream.next(), env.device)
            wait += time.perf_counter() - fetch
            with gradient_sync(self.wrapped, enabled=micro == accum - 1):
                with autocast(env.device, self.precision):
                    out = self.wrapped(batch)
                loss = _loss_of(out, self.task) / accum
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            for key, value in out.items():
                if isinstance(value, torch.Tensor):
                    outputs[key] = outputs.get(key, 0.0) + value.detach().float().mean() / accum
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if cfg.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        norm = full_tensor(norm).detach().float()
        finite = torch.isfinite(outputs["loss"])
        if self.scaler is None:
            finite = finite & torch.isfinite(norm)
        ok = collectives.all_reduce_mean(finite.float()).item() == 1.0
        if ok:
            if self.scaler is not None:
                self.scaler.step(self.optimizer)
            else:
                self.optimizer.step()
        if self.scaler is not None:
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.schedule.step()
        return outputs, norm.item(), ok, wait

    def _note_nonfinite(self) -> None:
        cfg = self.config
        self.skipped += 1
        self.in_row += 1
        self.progress.message(f"step {self.step}: loss or gradient not finite; step skipped "
                              f"({self.in_row} in a row, {self.skipped} in all)")
        if self.in_row >= cfg.max_nonfinite_steps:
            latest = self.checkpoints.latest()
            kept = f"the last good checkpoint is {latest}" if latest else "no checkpoint was written yet"
            raise NonFiniteLossError(
                f"the loss was NaN or inf for {self.in_row} optimizer steps in a row (steps "
                f"{self.step - self.in_row + 1}-{self.step}), run.max_nonfinite_steps is {cfg.max_nonfinite_steps}: "
                f"stopping; {kept}. Lower run.lr, set run.grad_clip, prefer bf16 to fp16, or check the data"
            )

    # -- reporting ----------------------------------------------------------------
    def _epoch(self) -> float:
        if self.stream is None:
            return 0
        per_epoch = self.stream.steps_per_epoch
        return round(self.step / per_epoch, 4) if per_epoch else self.stream.epoch

    def _log_window(self, window: _Window) -> None:
        cfg = self.config
        means = {key: collectives.all_reduce_mean(value / window.steps).item() for key, value in window.values.items()}
        record = {"step": self.step, "epoch": self._epoch(), **means,
                  "lr": self.schedule.lr_at(self.step - 1),
                  "grad_norm": window.grad_norm / window.steps,
                  "samples_per_s": cfg.batch_size * window.steps / max(window.elapsed, 1e-9),
                  "data_wait": window.wait / max(window.elapsed, 1e-9),
                  "step_time_s": window.elapsed / window.steps,
                  "skipped_steps": self.skipped}
        self.log.write(record)
        self.progress.advance(self.step, means.get("loss"), record["samples_per_s"])
        self.progress.report(record)

    def _results(self, resume_from: Optional[Path], sources: list[Any]) -> dict[str, Any]:
        counters: dict[str, int] = {}
        if self.stream is not None and self.stream.report is not None:
            counters["bad_media"] = self.stream.bad_media
        for source in sources:
            method = getattr(source, "counters", None)
            for key, value in (method() if callable(method) else {}).items():
                counters[key] = counters.get(key, 0) + int(value)
        total: dict[str, int] = {}
        for part in collectives.all_gather_objects(counters):
            for key, value in part.items():
                total[key] = total.get(key, 0) + value
        return {
            "steps": self.step,
            "epochs": self._epoch(),
            "samples": self.step * self.config.batch_size,
            "time_s": round(self._elapsed(), 3),
            "final": self.final_metrics,
            "best": self.best if self.best["metric"] else None,
            "skipped_steps": self.skipped,
            "counters": total,
            "world_size": self.env.world_size,
            "precision": self.precision_choice.as_dict(),
            "resumed_from": str(resume_from) if resume_from is not None else None,
            "checkpoint": str(self.checkpoints.path(self.last_saved_step)) if self.last_saved_step >= 0 else None,
        }

    # -- evaluation -----------------------------------------------------------------
    def _evaluate_and_keep(self, dataset: Any, final: bool = False) -> None:
        """Evaluate, log, and checkpoint when the best metric improved (always at the end)."""
        improved = self._evaluate(dataset)
        if self.optimizer is None:  # evaluation only: nothing to checkpoint
            return
        if (improved or final) and self.last_saved_step != self.step:
            self._save()
        if improved:
            self.checkpoints.mark_best(self.step)

    def _evaluate(self, dataset: Any) -> bool:
        cfg, env = self.config, self.env
        context = EvalContext(self.output_dir, self.step, int(self._epoch()), env, self.precision,
                              cfg.eval_batch_size or max(1, cfg.batch_size // (env.world_size * cfg.accum_steps)),
                              cfg.num_workers,
                              self.task.collate)
        self.model.eval()
        try:
            with preserved_rng(), torch.no_grad(), gathered_parameters(self.wrapped):
                metrics = self.task.evaluate(self.model, dataset, context)
        finally:
            self.wrapped.train()
        metrics = collectives.broadcast_object({key: float(value) for key, value in dict(metrics).items()})
        self.final_metrics, self.last_eval_step = metrics, self.step
        self.log.write({"step": self.step, "epoch": self._epoch(), **{f"eval/{k}": v for k, v in metrics.items()}})
        self.progress.message(format_record({"eval step": self.step, **metrics}))
        name = cfg.best_metric
        if name is None:
            return False
        if name not in metrics:
            raise ConfigError(f"run.best_metric {name!r} is not among the evaluation's metrics: {', '.join(metrics)}")
        value, best = metrics[name], self.best["value"]
        if math.isnan(value):
            return False
        if best is None or (value > best if cfg.best_mode == "max" else value < best):
            self.best.update(value=value, step=self.step)
            return True
        return False

    # -- checkpoints ------------------------------------------------------------------
    def _resume_path(self) -> Optional[Path]:
        """The checkpoint to resume from (decided on rank 0), or None for a fresh start."""
        resume, directory = self.config.resume, self.checkpoints.directory

        def decide() -> Optional[str]:
            latest = self.checkpoints.latest()
            if resume is False:
                if latest is not None:
                    raise ConfigError(f"{self.output_dir} already holds checkpoints ({latest.name}) and run.resume is "
                                      "false: set run.resume=auto to continue that run, or choose another output_dir")
                return None
            if resume == "auto":
                path, notes = self.checkpoints.latest_verified()
                for note in notes:
                    print(f"[vlreg] {note}", flush=True)
            else:
                path = resolve_checkpoint(resume)
                verify_checkpoint(path)
                step = read_manifest(path)["step"]
                newer = [p.name for s, p in step_checkpoints(directory) if s > step]
                if newer:
                    raise ConfigError(f"{directory} holds checkpoints newer than {path} ({', '.join(newer)}): move "
                                      "them away, or resume from the newest with run.resume=auto")
            self.checkpoints.prune()  # a run killed between a checkpoint and its rotation left one too many
            return None if path is None else str(path)

        chosen = collectives.broadcast_object(on_main(decide))
        return Path(chosen) if chosen is not None else None

    def _elapsed(self) -> float:
        """Seconds of training so far, over every resume."""
        return self.time_before + time.perf_counter() - self.started

    def _state(self) -> dict[str, Any]:
        return {
            "world_size": self.env.world_size,
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "rng": collectives.all_gather_objects(rng_state()),
            "data": collectives.all_gather_objects(self.stream.state_dict()),
            "window": collectives.all_gather_objects(self.window.state_dict()),
            "best": dict(self.best),
            "skipped_steps": self.skipped,
            "nonfinite_in_row": self.in_row,
            "time_s": self._elapsed(),
        }

    def _save(self) -> None:
        path = self.checkpoints.save(self.step, self.model, self.optimizer, self._state())
        self.last_saved_step = self.step
        self.progress.message(f"checkpoint {path}")

    def _restore(self, state: dict[str, Any]) -> None:
        cfg, env = self.config, self.env
        Checkpointer.load_optimizer(self.model, self.optimizer, state.get("optimizer"))
        self.schedule.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.step = int(state["step"])
        self.skipped, self.in_row = int(state["skipped_steps"]), int(state["nonfinite_in_row"])
        self.time_before = float(state["time_s"])
        if state["best"].get("metric") == cfg.best_metric:
            self.best = dict(state["best"])
        per_epoch = self.stream.steps_per_epoch
        if state["world_size"] == env.world_size:
            self.stream.load_state_dict(state["data"][env.rank])
        elif per_epoch is not None:  # map-style on another world size: the global batches follow from the step
            self.stream.load_state_dict({"epoch": self.step // per_epoch,
                                         "batches": (self.step % per_epoch) * cfg.accum_steps})
        else:
            raise ConfigError(f"cannot resume an IterableDataset run on {env.world_size} processes from a checkpoint "
                              f"made on {state['world_size']}: the data position is per process")
        if state["world_size"] == env.world_size:
            set_rng_state(state["rng"][env.rank])
            if state.get("window"):  # not in checkpoints written before windows were kept
                self.window.load_state_dict(state["window"][env.rank], env.device)
        else:
            warnings.warn(f"resuming on {env.world_size} processes a run checkpointed on {state['world_size']}: "
                          "random streams (dropout) are reseeded, so the run will not match an uninterrupted one",
                          stacklevel=3)
            seed_all(mix(cfg.seed, env.rank, self.step))

    def _total_steps(self) -> int:
        cfg = self.config
        if cfg.max_steps is not None:
            return cfg.max_steps
        if self.stream.steps_per_epoch is None:
            raise ConfigError("run.max_epochs needs a map-style training set (with a length); "
                              "this one is an IterableDataset: set run.max_steps instead")
        return cfg.max_epochs * self.stream.steps_per_epoch
