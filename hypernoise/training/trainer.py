"""The training loop, on accelerate the way diffusers' training examples use it.

One optimizer step = ``gradient_accumulation_steps`` micro-batches of ``batch_size`` samples per
process. Data and noise are pure functions of (seed, micro-batch index) (see ``data.py``), so a
resumed run replays exactly what an uninterrupted one would have seen. With
``reference_processes`` N the run follows N processes on fewer (a divisor of N): the warm-up is
N's, and each optimizer step holds exactly the prompts and noise the N processes' step held, each
process accumulating N / launched times more micro-batches (``Trainer._slot``). A step whose loss
or gradient norm is not finite is skipped (no optimizer update, no scheduler step) and counted;
too many in a row stop the run. SIGINT and SIGTERM finish the current step, write a checkpoint
and return.

Initialisation trials (``init_trials`` K > 1): a small LoRA's first steps depend on its random
initialisation, and under a strong noise-space penalty some draws never find the reward's
direction. Before the run, K initialisations (the task's own, then re-draws from seeds seed + 1,
..., seed + K - 1) each train ``trial_steps`` steps on the same prompts and noise from a fresh
optimizer; the one with the lowest mean loss over the second half of its trial is kept and
trains on from step ``trial_steps``, so the kept run is exactly the run that initialisation
would have had alone. ``init_trials.json`` records every trial's score; a checkpoint is written
right after the choice, so a resumed run never repeats the trials.

Validation (``validator`` given; ``validation.py``): every ``validation_every`` steps and at the
end, the main process scores the current weights on held-out prompts, appends to
``validation.jsonl`` and keeps ``best/``; it runs under a forked RNG, so a run with validation
trains exactly the weights of a run without. The best so far is part of the checkpoint state.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from hypernoise.devices import check_launch_env
from hypernoise.errors import CheckpointError, OutputExistsError, TrainingDivergedError
from hypernoise.faults import maybe_kill
from hypernoise.io import load_json, unrecorded, write_json
from hypernoise.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from hypernoise.training.config import RUN_DEFINING, TrainConfig
from hypernoise.training.data import NoiseSampler, PromptSampler
from hypernoise.training.task import TrainTask
from hypernoise.training.validation import (BEST_DIR, GRID_DIR, VALIDATION_FILE, ValidationRecord, Validator,
                                             log_to_trackers, validation_key)

CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.jsonl"
TRIALS_FILE = "init_trials.json"
#: the top-level entries of a training run's folder: the trainer's, validation's, the adapter, the
#: closing report's (``io.output_folder``'s ``writes``: nothing else there is the run's)
RUN_OUTPUTS = ("adapter", CHECKPOINT_DIR, METRICS_FILE, TRIALS_FILE, "logs", VALIDATION_FILE, GRID_DIR, BEST_DIR,
               "samples", "before_after.json")


@dataclass
class TrainResult:
    """What a finished (or interrupted) run reports."""

    step: int
    skipped_steps: int
    last_metrics: dict = field(default_factory=dict)
    resumed_from: Optional[str] = None
    interrupted: bool = False
    seconds: float = 0.0
    #: whether this process is the main one (the one that writes files and prints)
    is_main: bool = True


def build_optimizer(params: list, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
                           weight_decay=cfg.weight_decay)


def warmup_factor(step: int, warmup: int, from_zero: bool) -> float:
    """lr multiplier at optimizer step ``step`` (0-based) of a linear warm-up over ``warmup`` steps:
    (step + 1) / W (the first step already moves), or step / W from 0 (the authors': the lambda of
    diffusers' and transformers' ``get_scheduler("constant_with_warmup")``, equal at every step;
    tests/test_reference_processes.py compares them. Those packages are optional here, so neither is
    imported)."""
    if warmup <= 0:
        return 1.0
    return min(1.0, (step if from_zero else step + 1) / warmup)


def warmup_length(cfg: TrainConfig, processes: int = 1) -> int:
    """Optimizer steps of the warm-up: ``warmup_steps``, times the processes the run follows
    (``reference_processes``, else ``processes``) with ``warmup_per_process``."""
    return max(0, int(cfg.warmup_steps)) * (cfg.processes_for_schedule(processes) if cfg.warmup_per_process else 1)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, processes: int = 1):
    """Constant learning rate after a linear warm-up of ``warmup_length`` optimizer steps (from
    lr 0 with ``warmup_from_zero``). It steps once per optimizer step taken: a skipped step (not
    finite) does not advance it, as the authors' trainer returns before its scheduler step."""
    warmup = warmup_length(cfg, processes)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_factor(s, warmup, cfg.warmup_from_zero))


def schedule_note(cfg: TrainConfig, processes: int = 1) -> Optional[str]:
    """One line when the warm-up outlasts the run (a preset's 100 x 6-step warm-up on a 10-step
    smoke test): the learning rate then never reaches ``lr``; None otherwise."""
    warmup = warmup_length(cfg, processes)
    if warmup <= cfg.steps:
        return None
    top = cfg.lr * warmup_factor(cfg.steps - 1, warmup, cfg.warmup_from_zero)
    per = f" ({cfg.warmup_steps} x {cfg.processes_for_schedule(processes)} processes)" if cfg.warmup_per_process else ""
    return (f"note: the warm-up lasts {warmup} optimizer steps{per}, longer than this run's {cfg.steps}: the learning "
            f"rate stays below {cfg.lr:g} (at most {top:.3g}); a shorter warm-up (--warmup-steps) reaches it")


def _flatten(record: dict, prefix: str = "") -> dict:
    """{"objective": {"alpha": 1}} -> {"objective.alpha": 1}, so a mismatch names the setting."""
    out = {}
    for key, value in record.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _short(value, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def resolve_resume(out_dir: Path, resume: Optional[str]) -> Optional[Path]:
    """``"latest"`` -> newest complete checkpoint under ``out_dir`` (None if there is none)."""
    if not resume:
        return None
    if resume == "latest":
        return latest_checkpoint(out_dir / CHECKPOINT_DIR)
    path = Path(resume)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder {path} does not exist; set `resume` to latest or a checkpoint-N folder")
    return path


class _StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between steps; restores the handlers at exit."""

    def __init__(self):
        self.raised: Optional[int] = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, _frame):
        if self.raised is not None:  # second Ctrl-C: give up at once
            raise KeyboardInterrupt
        self.raised = signum

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        return False


def _make_accelerator(config: TrainConfig, out_dir: Path):
    """An Accelerator for this run. accelerate keeps one state per process; a single process
    may run several trainings (benchmarks, notebooks) with other precisions, so a conflicting
    non-distributed state is reset rather than refused."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    # Several processes launched on a machine with no GPU: accelerate forms a gloo group only
    # when told it is on the CPU.
    launched = check_launch_env() > 1
    kwargs = dict(mixed_precision=config.mixed_precision, project_dir=str(out_dir / "logs"),
                  log_with=None if config.report_to in (None, "none") else config.report_to,
                  cpu=launched and not torch.cuda.is_available())
    try:
        return Accelerator(**kwargs)
    except ValueError:
        if PartialState().num_processes > 1:
            raise
        AcceleratorState._reset_state()
        return Accelerator(**kwargs)


def _tracker_config(cfg: TrainConfig) -> dict:
    """The run's settings as trackers take them (scalars: TensorBoard's hparams refuse lists)."""
    out = {k: v for k, v in cfg.to_dict().items() if isinstance(v, (int, float, str, bool))}
    out["validation_prompts"] = len(cfg.validation_prompts)
    return out


def plain_json(value):
    """``value`` as it reads back from JSON (tuples become lists, unknown types strings)."""
    return json.loads(json.dumps(value, default=str))


class Trainer:
    """Trains ``task`` on ``prompts``; writes ``out_dir/metrics.jsonl`` and ``out_dir/checkpoints``.

    ``identity``: what defines the run besides ``config`` (generator and weights, method, reward
    and its weights, objective, hypernetwork shape: ``methods.train.run_identity``); stored in
    every checkpoint, and a resume whose identity or run-defining config differs is refused with
    the setting named. ``validator``: validates every ``config.validation_every`` steps and at the
    end (``validation.py``); None: no validation.
    """

    def __init__(self, task: TrainTask, config: TrainConfig, out_dir, accelerator=None, identity: Optional[dict] = None,
                 validator: Optional[Validator] = None):
        self.task, self.cfg, self.out_dir = task, config, Path(out_dir)
        self.identity = plain_json(identity or {})
        self.acc = accelerator or _make_accelerator(config, self.out_dir)
        self.task.to(self.acc.device)
        if config.gradient_checkpointing:
            self.task.enable_gradient_checkpointing()
        self.params = task.trainable_parameters()
        # micro-steps per optimizer step here: the reference run's accumulation x (its processes / ours)
        self.accumulation = config.accumulation_on(self.acc.num_processes)
        self.optimizer = build_optimizer(self.params, config)
        self.scheduler = build_scheduler(self.optimizer, config, self.acc.num_processes)
        self.model, self.optimizer = self.acc.prepare(self.task, self.optimizer)
        self.step, self.skipped, self.streak = 0, 0, 0
        self._log_sink: Optional[list] = None  # metrics held back (initialisation trials) instead of logged
        self.validator = validator
        self.validation = ValidationRecord(self.out_dir, validation_key(config.validation_prompts,
                                                                        config.validation_seeds))

    # ----------------------------------------------------------------- state
    @property
    def is_main(self) -> bool:
        return self.acc.is_main_process

    def _state(self) -> dict:
        return {"skipped_steps": self.skipped, "nonfinite_streak": self.streak,
                "num_processes": self.acc.num_processes, "config": self.cfg.to_dict(), "run": self.identity,
                "validation_best": self.validation.best}

    def save(self) -> Optional[Path]:
        """Write a checkpoint of the current step (main process only); all processes wait."""
        path = None
        if self.is_main:
            path = save_checkpoint(self.out_dir / CHECKPOINT_DIR, self.step, self.task.trainable_state_dict(),
                                   self.optimizer.state_dict(), self.scheduler.state_dict(), self._state(),
                                   self.cfg.checkpoints_total_limit)
        self.acc.wait_for_everyone()
        return path

    def load(self, path: Path) -> None:
        ckpt = load_checkpoint(path)
        state = ckpt["state"]
        self._check_same_identity(state.get("run") or {}, path)
        self._check_same_run(state.get("config", {}), path)
        self.task.load_trainable_state_dict({k: v.to(self.acc.device) for k, v in ckpt["trainable"].items()})
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.step = int(state["step"])
        self.skipped = int(state.get("skipped_steps", 0))
        self.streak = int(state.get("nonfinite_streak", 0))
        dropped = self.validation.restore(state.get("validation_best")) if self.validator is not None else None
        if dropped and self.is_main:
            print(f"resuming {self.out_dir}: {dropped}", flush=True)

    def _check_same_identity(self, saved: dict, path: Path) -> None:
        """Refuse a checkpoint of another run: generator, weights, method, reward, objective or
        hypernetwork (checkpoints written before identities were recorded pass)."""
        mine, theirs = _flatten(self.identity), _flatten(saved)
        for key, value in mine.items():
            if key in theirs and theirs[key] != value:
                raise CheckpointError(
                    f"checkpoint {path} belongs to another run: its {key} is {_short(theirs[key])}, this run's is "
                    f"{_short(value)}; resume with the same settings or start a new `out_dir`")

    def _check_nothing_to_lose(self) -> None:
        """``resume`` latest with no checkpoint: refuse where the folder holds a finished run (its
        adapter would be overwritten by a fresh start) or files of the run's names that its
        manifest does not list (someone's metrics.jsonl, samples/); else say a new run starts (a
        run killed before its first checkpoint restarts from step 0 and ends as an uninterrupted
        run: what it wrote was adopted into the manifest by ``io.output_folder``)."""
        if (self.out_dir / "adapter").exists():
            raise CheckpointError(
                f"`resume` latest found no checkpoint in {self.out_dir / CHECKPOINT_DIR}, but {self.out_dir} holds a "
                f"finished run (adapter/) that a fresh start would overwrite; pass a new `out_dir`, or `overwrite` "
                f"to replace it")
        theirs = unrecorded(self.out_dir, RUN_OUTPUTS)
        if theirs:  # a new run would write over them: another's metrics.jsonl, samples/...
            raise OutputExistsError(
                f"`resume` latest found no checkpoint in {self.out_dir / CHECKPOINT_DIR}, and {self.out_dir} holds "
                f"{', '.join(theirs[:3])}, which hypernoise did not write and a new run would overwrite; nothing was "
                f"written; move them or pass a new `out_dir`")
        if self.is_main:
            print(f"nothing to resume in {self.out_dir}: starting a new run", flush=True)

    def _check_same_run(self, saved: dict, path: Path) -> None:
        for key in RUN_DEFINING:
            if key in saved and saved[key] != getattr(self.cfg, key):
                raise CheckpointError(
                    f"checkpoint {path} was written with {key}={saved[key]!r}, this run has {getattr(self.cfg, key)!r}; "
                    f"resume with the same settings or start a new `out_dir`")

    # ----------------------------------------------------------------- loop
    def fit(self, prompts: Sequence[str], resume: Optional[str] = None, *, prompt_sampler: Optional[PromptSampler] = None,
            noise_sampler: Optional[NoiseSampler] = None) -> TrainResult:
        """Train to ``cfg.steps``. The samplers (default: ``PromptSampler`` over ``prompts`` and
        ``NoiseSampler`` in ``cfg.noise_mode``) may be given to inject fixed data, as the
        reference-parity test does; any object with their ``batch`` method works."""
        cfg, acc = self.cfg, self.acc
        resume_path = resolve_resume(self.out_dir, resume)
        if resume == "latest" and resume_path is None:
            self._check_nothing_to_lose()
        if resume_path is not None:
            self.load(resume_path)
        if cfg.report_to not in (None, "none"):
            acc.init_trackers("hypernoise", config=_tracker_config(cfg))
        per, world = cfg.batch_size, acc.num_processes
        reference = cfg.processes_for_schedule(world)  # the global batch is the reference run's
        prompt_sampler = prompt_sampler or PromptSampler(prompts, per * reference, cfg.seed)
        noise_sampler = noise_sampler or NoiseSampler(self.task.latent_shape, per * reference, cfg.seed,
                                                      cfg.noise_mode, cfg.gradient_accumulation_steps)
        note = schedule_note(cfg, world)
        if note and self.is_main and self.step == 0:
            print(note, flush=True)
        self._truncate_metrics()
        if self.validator is not None and self.is_main:
            self.validation.truncate(self.step)
        t0 = time.perf_counter()
        if cfg.init_trials > 1 and resume_path is None and self.step == 0:
            self._select_initialisation(prompt_sampler, noise_sampler, per, world)
        start, last = self.step, {}
        bar = self._progress(start)
        with _StopFlag() as stop:
            while self.step < cfg.steps and stop.raised is None:
                last = self._train_step(prompt_sampler, noise_sampler, per, world)
                bar.update(1)
                bar.set_postfix(loss=f"{last['loss']:.4g}", reward=f"{last['reward']:.4g}")
                if self._validation_due():
                    self._validate()  # before the checkpoint, whose state holds the best so far
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                    self.save()
            bar.close()
            interrupted = stop.raised is not None
            if self.step > start or resume_path is None or interrupted:
                self.save()
        if cfg.report_to not in (None, "none"):
            acc.end_training()
        return TrainResult(self.step, self.skipped, last, str(resume_path) if resume_path else None,
                           interrupted, time.perf_counter() - t0, self.is_main)

    def _progress(self, start: int, total: Optional[int] = None, desc: str = "train"):
        from tqdm.auto import tqdm

        return tqdm(total=total or self.cfg.steps, initial=start, desc=desc, unit="step", dynamic_ncols=True,
                    disable=not (self.cfg.progress and self.is_main))

    def _snapshot(self) -> dict:
        """The trainable weights, optimizer and scheduler states and step counters, copied."""
        return {"weights": {k: v.clone() for k, v in self.task.trainable_state_dict().items()},
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "scheduler": copy.deepcopy(self.scheduler.state_dict()),
                "counters": (self.step, self.skipped, self.streak)}

    def _restore(self, snap: dict) -> None:
        self.task.load_trainable_state_dict(snap["weights"])
        self.optimizer.load_state_dict(copy.deepcopy(snap["optimizer"]))
        self.scheduler.load_state_dict(copy.deepcopy(snap["scheduler"]))
        self.step, self.skipped, self.streak = snap["counters"]

    def _select_initialisation(self, prompt_sampler, noise_sampler, per: int, world: int) -> None:
        """Run the initialisation trials (module docstring); leave the trainer in the kept trial's
        state at step ``trial_steps``, its metrics logged, and a checkpoint written."""
        cfg = self.cfg
        fresh = self._snapshot()
        trials, best = [], None
        for k in range(cfg.init_trials):
            self._restore(fresh)
            if k:
                self.task.reinitialize(cfg.seed + k)
            self._log_sink = []
            bar = self._progress(0, cfg.trial_steps, f"init {k + 1}/{cfg.init_trials}")
            losses = []
            for _ in range(cfg.trial_steps):
                losses.append(self._train_step(prompt_sampler, noise_sampler, per, world)["loss"])
                bar.update(1)
            bar.close()
            tail = [l for l in losses[len(losses) // 2:] if math.isfinite(l)]
            score = sum(tail) / len(tail) if tail else math.inf
            trials.append({"trial": k, "init_seed": cfg.seed + k, "score": score, "last_loss": losses[-1]})
            if best is None or score < trials[best["trial"]]["score"]:
                best = {"trial": k, "log": self._log_sink, "state": self._snapshot()}
        self._log_sink = None
        self._restore(best["state"])
        for metrics in best["log"]:
            self._log(metrics)
        if self.is_main:
            write_json(self.out_dir / TRIALS_FILE, {"kept": best["trial"], "score": "mean loss over the second half of each trial",
                                                   "trial_steps": cfg.trial_steps, "trials": trials})
        if self._validation_due():
            self._validate()
        self.save()

    def _slot(self, micro: int, world: int) -> tuple[int, int]:
        """(reference micro-batch index, reference rank) of this process's micro-step ``micro``:
        with ``reference_processes`` N over ``world`` launched processes, each reference micro-batch
        is worked through in N / world consecutive micro-steps, this process taking the slice of
        reference rank (micro mod N / world) x world + its rank. As launched: (index, rank)."""
        group = self.accumulation // self.cfg.gradient_accumulation_steps
        index = self.step * self.cfg.gradient_accumulation_steps + micro // group
        return index, (micro % group) * world + self.acc.process_index

    def _train_step(self, prompt_sampler, noise_sampler, per: int, world: int) -> dict:
        cfg, acc = self.cfg, self.acc
        accum = self.accumulation
        sums: dict[str, float] = {}
        dtype = self.task.noise_dtype
        self.task.set_step(self.step)
        for micro in range(accum):
            index, rank = self._slot(micro, world)
            # the noise first: the batch's first large allocation, so a batch too large for memory fails
            # at once (one line naming --batch-size), not after listing its prompts
            noise = noise_sampler.batch(index, rank, per, device=acc.device, dtype=dtype)
            prompts = prompt_sampler.batch(index, rank, per)
            sync = contextlib.nullcontext() if micro == accum - 1 else acc.no_sync(self.model)
            with sync:
                with acc.autocast():
                    terms = self.model(noise, prompts)
                acc.backward(terms["loss"] / accum)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(torch.as_tensor(v).detach().float()) / accum
        maybe_kill("step", self.step + 1)
        grad_norm = acc.clip_grad_norm_(self.params, cfg.max_grad_norm or math.inf)
        finite = torch.tensor(float(math.isfinite(sums["loss"]) and bool(torch.isfinite(torch.as_tensor(grad_norm)))),
                              device=acc.device)
        finite = bool(acc.reduce(finite, reduction="sum") == world) if world > 1 else bool(finite)
        if finite:
            self.optimizer.step()
            self.scheduler.step()  # only after a step taken: a skipped step leaves the warm-up where it was
            self.streak = 0
        else:
            self.skipped += 1
            self.streak += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        metrics = self._metrics(sums, grad_norm, noise, prompts)
        if self.streak >= cfg.max_nonfinite_streak:
            raise TrainingDivergedError(
                f"{self.streak} steps in a row had non-finite loss or gradients (step {self.step}); lower `lr`, "
                f"check the reward, or resume from an earlier checkpoint")
        return metrics

    def _metrics(self, sums: dict, grad_norm, noise, prompts) -> dict:
        cfg, acc = self.cfg, self.acc
        if acc.num_processes > 1:
            keys = sorted(sums)
            vec = acc.reduce(torch.tensor([sums[k] for k in keys], device=acc.device, dtype=torch.float64), reduction="mean")
            sums = dict(zip(keys, vec.tolist()))
        metrics = {"step": self.step, **sums, "grad_norm": float(grad_norm), "lr": self.scheduler.get_last_lr()[0],
                   "skipped_steps": self.skipped}
        if cfg.lipschitz_every and self.step % cfg.lipschitz_every == 0:
            metrics.update(self.task.diagnostics(noise, prompts, cfg.lipschitz_iters))
        if self.step % cfg.log_every == 0 or self.step == cfg.steps:
            self._log(metrics)
        return metrics

    # ----------------------------------------------------------------- validation
    def _validation_due(self) -> bool:
        """Every ``validation_interval`` steps and at the last step (the same answer on every process)."""
        every = self.cfg.validation_interval
        return self.validator is not None and (self.step == self.cfg.steps or every > 0 and self.step % every == 0)

    def _validate(self) -> None:
        """Validate the weights of this step (main process; the others wait). The RNG streams are
        forked, so that training draws exactly what it would have drawn without validation."""
        if self.is_main:
            devices = [self.acc.device] if self.acc.device.type == "cuda" else []
            with torch.random.fork_rng(devices=devices), torch.no_grad():
                result = self.validator.run(self.step)
            self.validation.write(self.step, result, self.validator.save_adapter)
            if self.cfg.report_to not in (None, "none"):
                log_to_trackers(self.acc, self.step, result)
        self.acc.wait_for_everyone()

    # ----------------------------------------------------------------- logging
    def _log(self, metrics: dict) -> None:
        if self._log_sink is not None:
            self._log_sink.append(metrics)
            return
        if not self.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.out_dir / METRICS_FILE, "a") as f:
            f.write(json.dumps(metrics) + "\n")
        if self.cfg.report_to not in (None, "none"):
            self.acc.log({k: v for k, v in metrics.items() if k != "step"}, step=self.step)

    def _truncate_metrics(self) -> None:
        """Drop log lines past the resumed step, so a resumed run's log reads as one run."""
        path = self.out_dir / METRICS_FILE
        if not self.is_main or not path.is_file():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                if load_json(line).get("step", 0) <= self.step:
                    keep.append(line)
            except (ValueError, AttributeError):  # a line cut by a crash (or not a row of this log)
                continue
        path.write_text("".join(l + "\n" for l in keep))
