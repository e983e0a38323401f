"""Training settings as a validated dataclass (names follow diffusers' training scripts)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional

from hypernoise.errors import ConfigError

OPTIMIZERS = ("sgd", "adamw")
NOISE_MODES = ("per-sample", "shared", "per-step", "fixed")
PRECISIONS = ("no", "bf16", "fp16")

#: fields that define the run: resuming with another value would silently train another model
RUN_DEFINING = ("batch_size", "gradient_accumulation_steps", "lr", "optimizer", "momentum", "nesterov",
                "weight_decay", "warmup_steps", "warmup_from_zero", "warmup_per_process", "max_grad_norm", "noise_mode",
                "seed", "num_steps")


def _positive(name: str, value, kind=int):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"`{name}` must be a positive {'integer' if kind is int else 'number'}, got {value}", field=name)
    if kind is int and int(value) != value:
        raise ConfigError(f"`{name}` must be a positive integer, got {value}", field=name)


@dataclass
class TrainConfig:
    """How to train a hypernetwork (or a fine-tuning LoRA). Validated on construction."""

    steps: int = field(default=200, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=4, metadata={"help": "samples per process per micro-step"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-steps per optimizer step"})
    lr: float = field(default=1e-3, metadata={"help": "learning rate (the paper: SGD 1e-3 on SANA-Sprint)"})
    optimizer: str = field(default="sgd", metadata={"help": "sgd or adamw"})
    momentum: float = field(default=0.9, metadata={"help": "SGD momentum"})
    nesterov: bool = field(default=False, metadata={"help": "SGD Nesterov momentum"})
    weight_decay: float = field(default=0.0, metadata={"help": "weight decay (AdamW: decoupled)"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warmup steps of the constant-with-warmup schedule"})
    warmup_from_zero: bool = field(default=False, metadata={
        "help": "warm-up starts at lr 0 (lr x step / W, the authors' constant_with_warmup) instead of lr / W"})
    warmup_per_process: bool = field(default=False, metadata={
        "help": "warm-up lasts warmup_steps x processes optimizer steps (the authors' runs)"})
    max_grad_norm: Optional[float] = field(default=1.0, metadata={"help": "gradient-norm clipping; None or 0 to disable"})
    noise_mode: str = field(default="shared", metadata={
        "help": "per-sample; shared (one noise per micro-batch); per-step (one noise per optimizer step, shared by "
                "every row, micro-step and process: the authors' latent_type=batch); fixed"})
    seed: int = field(default=0, metadata={"help": "seed of prompt order and noise"})
    init_trials: int = field(default=1, metadata={"help": "initialisations tried for trial_steps each; the lowest-loss one trains on"})
    trial_steps: int = field(default=100, metadata={"help": "optimizer steps of each initialisation trial"})
    num_steps: Optional[int] = field(default=None, metadata={"help": "generator steps during training (default: the generator's)"})
    checkpoint_every: int = field(default=0, metadata={"help": "write a checkpoint every N steps (0: only at the end)"})
    checkpoints_total_limit: Optional[int] = field(default=None, metadata={"help": "keep at most this many checkpoints"})
    log_every: int = field(default=1, metadata={"help": "log metrics every N steps"})
    lipschitz_every: int = field(default=0, metadata={"help": "estimate ||J_f||_2 every N steps (0: off)"})
    lipschitz_iters: int = field(default=8, metadata={"help": "power-iteration steps of the Lipschitz estimate"})
    mixed_precision: str = field(default="no", metadata={"help": "no, bf16 or fp16 (frozen weights low precision, LoRA fp32)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute backbone activations in backward"})
    report_to: Optional[str] = field(default=None, metadata={"help": "tensorboard or wandb (imported only when asked for)"})
    max_nonfinite_streak: int = field(default=20, metadata={"help": "stop after this many non-finite steps in a row"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})

    def __post_init__(self):
        for name in ("steps", "batch_size", "gradient_accumulation_steps", "log_every", "max_nonfinite_streak",
                     "init_trials", "trial_steps"):
            _positive(name, getattr(self, name))
        _positive("lr", self.lr, float)
        if self.num_steps is not None:
            _positive("num_steps", self.num_steps)
        for name in ("warmup_steps", "checkpoint_every", "lipschitz_every"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"`{name}` must be >= 0, got {getattr(self, name)}", field=name)
        if self.init_trials > 1 and self.trial_steps >= self.steps:
            raise ConfigError(f"`trial_steps` ({self.trial_steps}) must be below `steps` ({self.steps}) when "
                              f"`init_trials` > 1", field="trial_steps")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}",
                              field="optimizer")
        if self.noise_mode not in NOISE_MODES:
            raise ConfigError(f"unknown noise mode {self.noise_mode!r}; choose one of: {', '.join(NOISE_MODES)}",
                              field="noise_mode")
        if self.mixed_precision not in PRECISIONS:
            raise ConfigError(f"unknown mixed precision {self.mixed_precision!r}; choose one of: {', '.join(PRECISIONS)}",
                              field="mixed_precision")
        if self.report_to not in (None, "none", "tensorboard", "wandb"):
            raise ConfigError(f"`report_to` must be tensorboard or wandb, got {self.report_to!r}", field="report_to")
        if self.max_grad_norm is not None and self.max_grad_norm < 0:
            raise ConfigError(f"`max_grad_norm` must be >= 0, got {self.max_grad_norm}", field="max_grad_norm")

    def to_dict(self) -> dict:
        return asdict(self)
