"""Training settings as a validated dataclass (names follow diffusers' training scripts)."""

from __future__ import annotations

import math
import numbers
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Optional

from hypernoise.errors import ConfigError
from hypernoise.tracking import tracker_names

OPTIMIZERS = ("sgd", "adamw")
NOISE_MODES = ("per-sample", "shared", "per-step", "fixed")
PRECISIONS = ("no", "bf16", "fp16")

#: fields that define the run: resuming with another value would silently train another model
RUN_DEFINING = ("batch_size", "gradient_accumulation_steps", "lr", "optimizer", "momentum", "nesterov",
                "weight_decay", "warmup_steps", "warmup_from_zero", "warmup_per_process", "max_grad_norm", "noise_mode",
                "seed", "num_steps", "reference_processes")


#: the largest seed anywhere (training, --seed, --seeds): the offsets some noise streams add to a
#: seed (best-of-N candidates, repeated prompts, initialisation trials) stay far inside torch's
#: 64-bit seed range, and every integer from 0 to it is a valid seed for torch and numpy alike
MAX_SEED = 2**32 - 1


def _is_int(value) -> bool:
    """An int, or an integral finite float (5.0); never a bool or a string."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return False
    return isinstance(value, numbers.Integral) or (math.isfinite(value) and int(value) == value)


def check_int(value, name: str, low: int = 1, high: Optional[int] = None, why: str = "",
              what: Optional[str] = None) -> int:
    """``value`` as an int in [low, high]; ``ConfigError`` naming `name` (its ``field``) otherwise.

    ``why`` (appended to the message of a value above ``high``) says what the bound protects;
    ``what`` words the lower bound ("at least 1")."""
    if not _is_int(value) or value < low:
        what = what or ("a positive integer" if low == 1 else "an integer >= 0" if low == 0 else f"an integer >= {low}")
        raise ConfigError(f"`{name}` must be {what}, got {value!r}", field=name)
    if high is not None and value > high:
        raise ConfigError(f"`{name}` must be at most {high}{f' ({why})' if why else ''}, got {value}", field=name)
    return int(value)


def number_range(low: float = 0.0, strict: bool = True, high: Optional[float] = None, high_strict: bool = False) -> str:
    """How a range reads in a message: "a positive number", "a number >= 0", "a number in [0, 1)"."""
    if high is not None:
        return f"a number in {'(' if strict else '['}{low:g}, {high:g}{')' if high_strict else ']'}"
    if low == 0:
        return "a positive number" if strict else "a number >= 0"
    return f"a number {'>' if strict else '>='} {low:g}"


def check_number(value, name: str, low: float = 0.0, strict: bool = True, high: Optional[float] = None,
                 high_strict: bool = False, what: Optional[str] = None) -> float:
    """``value`` as a finite float above ``low`` (``strict``) or at least ``low``, and at most
    ``high`` (below it with ``high_strict``); NaN and the infinities are refused. ``ConfigError``
    naming `name` (its ``field``) otherwise; ``what`` words the range ("positive")."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"`{name}` must be a number, got {value!r}", field=name)
    if not math.isfinite(value):
        raise ConfigError(f"`{name}` must be a finite number, got {value!r}", field=name)
    if not ((value > low if strict else value >= low) and (high is None or (value < high if high_strict else value <= high))):
        raise ConfigError(f"`{name}` must be {what or number_range(low, strict, high, high_strict)}, got {value!r}",
                          field=name)
    return float(value)


def check_seed(value, name: str = "seed") -> int:
    """A seed: an integer in [0, ``MAX_SEED``]."""
    if not _is_int(value) or not 0 <= value <= MAX_SEED:
        raise ConfigError(f"`{name}` must be an integer from 0 to {MAX_SEED}, got {value!r}", field=name)
    return int(value)


def check_seeds(seeds, name: str = "seeds") -> tuple:
    """Seeds per prompt: at least one, each a seed (``check_seed``), none twice (a repeated seed
    is a copy of an image, which would count twice in every mean)."""
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise ConfigError(f"`{name}` must be a sequence of integers, e.g. (0, 1, 2, 3), got {seeds!r}", field=name)
    seeds = tuple(seeds)
    if not seeds:
        raise ConfigError(f"`{name}` must hold at least one seed, e.g. (0, 1, 2, 3)", field=name)
    out = tuple(check_seed(s, name) for s in seeds)
    twice = sorted({s for s in out if out.count(s) > 1})
    if twice:
        raise ConfigError(f"`{name}` must list each seed once; {', '.join(map(str, twice))} given more than once "
                          f"(a repeated seed repeats its images, which then count twice in every mean)", field=name)
    return out


def check_prompt_list(prompts, name: str) -> tuple:
    """``prompts`` as a tuple of non-empty strings, each listed once (a repeat would count twice in
    every mean); empty is allowed."""
    if isinstance(prompts, (str, bytes)) or not hasattr(prompts, "__iter__"):
        raise ConfigError(f"`{name}` must be a list of prompts, got {prompts!r}", field=name)
    out = tuple(prompts)
    bad = next((p for p in out if not isinstance(p, str) or not p.strip()), None)
    if bad is not None:
        raise ConfigError(f"`{name}` must hold non-empty strings, got {bad!r}", field=name)
    repeated = next(((p, n) for p, n in Counter(out).items() if n > 1), None)
    if repeated:
        raise ConfigError(f"`{name}` must list each prompt once; {repeated[0]!r} is given {repeated[1]} times",
                          field=name)
    return out


def _positive(name: str, value, kind=int):
    if kind is int:
        check_int(value, name)
    else:
        check_number(value, name)


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
    reference_processes: Optional[int] = field(default=None, metadata={
        "help": "train as N processes of batch_size x gradient_accumulation_steps would: their warm-up, their prompts "
                "and noise per optimizer step; the processes launched must divide N, each accumulating N / launched "
                "times more micro-batches (None: as launched)"})
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
    report_to: Optional[str] = field(default=None, metadata={
        "help": "an accelerate tracker (tensorboard, wandb, mlflow, comet_ml, ... or all), imported only when asked for"})
    max_nonfinite_streak: int = field(default=20, metadata={"help": "stop after this many non-finite steps in a row"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    validation_prompts: tuple = field(default=(), metadata={
        "help": "held-out prompts scored every validation_every steps and at the end (never the test prompts); "
                "empty: no validation"})
    validation_every: Optional[int] = field(default=None, metadata={
        "help": "validate every N optimizer steps and at the end (0: only at the end; default: about ten times a "
                "run, every steps // 10); needs validation_prompts"})
    validation_seeds: tuple = field(default=(0, 1), metadata={"help": "noise seeds per validation prompt"})

    def __post_init__(self):
        for name in ("steps", "batch_size", "gradient_accumulation_steps", "log_every", "max_nonfinite_streak",
                     "init_trials", "trial_steps", "lipschitz_iters"):
            _positive(name, getattr(self, name))
        _positive("lr", self.lr, float)
        check_number(self.momentum, "momentum", 0.0, strict=False, high=1.0, high_strict=True)
        check_number(self.weight_decay, "weight_decay", 0.0, strict=False)
        check_seed(self.seed)
        if self.num_steps is not None:
            _positive("num_steps", self.num_steps)
        for name in ("warmup_steps", "checkpoint_every", "lipschitz_every"):
            check_int(getattr(self, name), name, low=0)
        if self.reference_processes is not None:
            check_int(self.reference_processes, "reference_processes")
        if self.checkpoints_total_limit is not None:
            # 0 or less would delete every checkpoint as it is written
            check_int(self.checkpoints_total_limit, "checkpoints_total_limit")
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
        if self.report_to not in (None, "none", *tracker_names()):
            raise ConfigError(f"`report_to` must be one of accelerate's trackers ({', '.join(tracker_names())}), got "
                              f"{self.report_to!r}", field="report_to")
        if self.max_grad_norm is not None:  # 0: no clipping; negative, NaN or inf: refused
            check_number(self.max_grad_norm, "max_grad_norm", 0.0, strict=False)
        self.validation_prompts = check_prompt_list(self.validation_prompts, "validation_prompts")
        self.validation_seeds = check_seeds(self.validation_seeds, "validation_seeds")
        if self.validation_every is not None:
            check_int(self.validation_every, "validation_every", low=0)
        if self.validation_every and not self.validation_prompts:
            raise ConfigError("`validation_every` needs `validation_prompts` (the held-out prompts to validate on)",
                              field="validation_every")

    @property
    def validation_interval(self) -> int:
        """Optimizer steps between validations (0: only at the end): ``validation_every``, else
        about ten validations a run."""
        return self.validation_every if self.validation_every is not None else max(1, self.steps // 10)

    def processes_for_schedule(self, launched: int) -> int:
        """The process count the run's schedule and data follow: ``reference_processes``, else ``launched``."""
        return int(self.reference_processes or launched)

    def accumulation_on(self, launched: int) -> int:
        """Micro-steps per optimizer step on ``launched`` processes: ``gradient_accumulation_steps``
        x (reference processes / launched), so that each optimizer step sees the reference run's
        global batch; ``ConfigError`` when ``launched`` does not divide the reference count."""
        reference = self.processes_for_schedule(launched)
        if reference % launched:
            divisors = ", ".join(str(d) for d in range(1, reference + 1) if reference % d == 0)
            raise ConfigError(f"`reference_processes` {reference} needs a number of processes that divides it, got "
                              f"{launched}; launch {divisors}, or drop `reference_processes`",
                              field="reference_processes")
        return self.gradient_accumulation_steps * (reference // launched)

    def to_dict(self) -> dict:
        return asdict(self)
