"""The ``run:`` section of a config: how long, how fast and where a training run goes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Union

from ..errors import ConfigError


@dataclass
class RunConfig:
    """How a :class:`~vlreg.runner.Trainer` trains: schedule, optimizer, precision, checkpoints.

    Length: exactly one of ``max_steps`` (optimizer steps) and ``max_epochs`` (passes
    over a map-style dataset; an epoch is ``len(dataset) // batch_size`` optimizer
    steps, the incomplete last global batch is dropped).

    Batch arithmetic: ``batch_size`` is the GLOBAL batch of one optimizer step::

        batch_size = micro_batch * world_size * accum_steps

    where ``micro_batch`` is what one process puts through the model at once. Each
    process runs ``accum_steps`` micro-batches of ``micro_batch`` samples, summing
    gradients (without a gradient all-reduce on all but the last), then the optimizer
    steps once. ``batch_size`` must be divisible by ``world_size * accum_steps``.
    The loss of a micro-batch is divided by ``accum_steps`` and data-parallel
    gradients are averaged over ranks, so a step's gradient is the mean over the
    global batch whatever the split.

    Arguments:
        output_dir: where metrics.jsonl, TensorBoard events, checkpoints/, predictions
            and results.json go.
        max_steps / max_epochs: the run's length (set exactly one; ``max_steps: 0`` trains
            nothing and only evaluates, as does a run given no training set).
        batch_size: global samples per optimizer step (see above).
        accum_steps: micro-batches per optimizer step on each process.
        eval_batch_size: samples per process per evaluation batch (default: the
            training micro-batch).
        lr: peak learning rate, reached at the end of warmup.
        min_lr: the learning rate the cosine decay ends at, after the last step.
        weight_decay: AdamW decoupled weight decay, for matrices only (see vlreg.runner.optim).
        betas, eps: AdamW's.
        warmup_steps: optimizer steps of linear warmup from ``warmup_start_lr`` to ``lr``.
        warmup_start_lr: the learning rate of the first step.
        layer_decay: layer-wise learning-rate decay: a parameter in layer ``i`` of
            ``L`` gets ``lr * layer_decay ** (L + 1 - i)``; None disables it.
        grad_clip: clip the global gradient norm to this value; None: no clipping
            (the norm is still measured and logged).
        precision: ``auto`` (by the device: bf16 on GPUs that compute it, else fp16; bf16 on
            CPUs with native bf16, AMX or AVX-512 BF16, else fp32; see :mod:`vlreg.device`);
            ``fp32``; ``bf16`` (autocast, CPU or GPU); ``fp16`` (autocast and a GradScaler, GPU
            only). Trainable weights and optimizer state stay fp32. The frozen components'
            ``precision: auto`` follows the resolved value.
        threads: torch threads of a CPU run: a number, or ``auto``: ``OMP_NUM_THREADS`` where set,
            else the cores other work leaves idle when the run starts (at least one; see
            :func:`vlreg.device.cpu_threads`). GPU runs leave torch's setting alone.
        seed: seeds python, numpy and torch (plus the rank), the data order and
            every sample's augmentation.
        deterministic: ask torch for deterministic algorithms (slower; warns where
            an op has none).
        eval_every: evaluate every N optimizer steps, or every N epochs when
            ``max_epochs`` is set; None: only at the end. Evaluation also runs at
            the end of training when an eval dataset is given.
        checkpoint_every: save a checkpoint every N optimizer steps (0: only at the
            end of training and at a new best evaluation).
        keep_checkpoints: how many step checkpoints to keep (the ``best`` one is extra).
        resume: ``"auto"`` continues from the newest complete checkpoint in
            ``output_dir`` (a fresh start when there is none); a path to a checkpoint
            directory (or to a run directory, meaning its newest checkpoint) resumes
            from it; ``false`` starts fresh and refuses an ``output_dir`` that already
            holds checkpoints.
        num_workers: DataLoader worker processes per rank.
        log_every: write a metrics line every N optimizer steps.
        best_metric: an evaluation metric name (e.g. ``CIDEr``) whose best value
            selects the ``best`` checkpoint; None: no selection.
        best_mode: whether larger (``max``) or smaller (``min``) is better.
        max_nonfinite_steps: stop the run after this many optimizer steps in a row
            with a NaN or inf loss (each is skipped, without an update).
        distributed: under torchrun, ``ddp`` (replicated model) or ``fsdp``
            (FSDP2 ``fully_shard``: parameters, gradients and optimizer state sharded).
        find_unused_parameters: DDP's option, for models whose trainable parameters
            do not all take part in every step.
    """

    output_dir: str
    max_steps: Optional[int] = None
    max_epochs: Optional[int] = None
    batch_size: int = 32
    accum_steps: int = 1
    eval_batch_size: Optional[int] = None
    lr: float = 1e-4
    min_lr: float = 0.0
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 0
    warmup_start_lr: float = 0.0
    layer_decay: Optional[float] = None
    grad_clip: Optional[float] = None
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    threads: Union[int, Literal["auto"]] = "auto"
    seed: int = 42
    deterministic: bool = False
    eval_every: Optional[int] = None
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    resume: Union[bool, str] = "auto"
    num_workers: int = 2
    log_every: int = 10
    best_metric: Optional[str] = None
    best_mode: Literal["max", "min"] = "max"
    max_nonfinite_steps: int = 5
    distributed: Literal["ddp", "fsdp"] = "ddp"
    find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        if (self.max_steps is None) == (self.max_epochs is None):
            raise ConfigError("run: set exactly one of max_steps and max_epochs")
        positive = {"batch_size": self.batch_size, "accum_steps": self.accum_steps, "log_every": self.log_every,
                    "keep_checkpoints": self.keep_checkpoints, "max_nonfinite_steps": self.max_nonfinite_steps,
                    "max_epochs": self.max_epochs, "eval_every": self.eval_every,
                    "eval_batch_size": self.eval_batch_size}
        for key, value in positive.items():
            if value is not None and value < 1:
                raise ConfigError(f"run.{key} must be at least 1, got {value}")
        non_negative = {"max_steps": self.max_steps or 0, "checkpoint_every": self.checkpoint_every, "warmup_steps": self.warmup_steps,
                        "num_workers": self.num_workers, "lr": self.lr, "min_lr": self.min_lr,
                        "warmup_start_lr": self.warmup_start_lr, "weight_decay": self.weight_decay}
        for key, value in non_negative.items():
            if value < 0:
                raise ConfigError(f"run.{key} must not be negative, got {value}")
        if self.batch_size % self.accum_steps:
            raise ConfigError(f"run.batch_size {self.batch_size} is not divisible by run.accum_steps {self.accum_steps}")
        if self.min_lr > self.lr:
            raise ConfigError(f"run.min_lr {self.min_lr} is above run.lr {self.lr}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"run.betas must be two numbers in [0, 1), got {list(self.betas)}")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            raise ConfigError(f"run.layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"run.grad_clip must be positive (or null for no clipping), got {self.grad_clip}")
        if self.threads != "auto" and (not isinstance(self.threads, int) or self.threads < 1):
            raise ConfigError(f"run.threads must be auto or a positive number, got {self.threads!r}")
        if self.resume is True:
            self.resume = "auto"
        if self.resume == "":
            raise ConfigError("run.resume must be 'auto', a checkpoint path, or false")

    def micro_batch_size(self, world_size: int) -> int:
        """Samples per process per forward pass: ``batch_size / (world_size * accum_steps)``."""
        per_step = world_size * self.accum_steps
        if self.batch_size % per_step:
            raise ConfigError(
                f"run.batch_size {self.batch_size} must be divisible by world_size * accum_steps = "
                f"{world_size} * {self.accum_steps} = {per_step} (it is the global batch per optimizer step)"
            )
        return self.batch_size // per_step
