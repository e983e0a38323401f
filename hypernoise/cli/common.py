"""Options shared by several commands, and their conversion into config objects."""

from __future__ import annotations

import argparse
from typing import Callable, Optional

from hypernoise.errors import ConfigError
from hypernoise.hypernet.base import MAX_PASSES
from hypernoise.methods.hypernoise import ModelConfig
from hypernoise.training.config import MAX_SEED, TrainConfig, check_int, check_number, check_seed, check_seeds

#: generators small enough that one thread per process is fastest (NOTES.md: 2-7x on 2 cores)
#: generators whose work is too small for a second thread to pay off
SMALL_GENERATORS = ("toy2d",)

#: the largest --height/--width: 8x the sides the supported models are made for (SD-Turbo 512 px,
#: SANA-Sprint and FLUX-Schnell about 1024 px); beyond it a run would only fail later, out of memory
MAX_IMAGE_SIDE = 8192


# ----------------------------------------------------------------- argparse types
# Each checks a value where it is parsed, with the library's own wording (training.config's
# check_int / check_number), so that `--lr nan` fails at once as "--lr must be a finite number,
# got nan" (OneLineParser.error puts the flag first), before any model loads or folder is made.

def _rewrap(error: ConfigError) -> argparse.ArgumentTypeError:
    """The library's "`value` must be ..." as argparse's "must be ..." (the parser names the flag)."""
    return argparse.ArgumentTypeError(str(error).replace("`value` ", "", 1))


def checked_arg(convert: Callable, check: Callable, usage: str, name: str):
    """argparse type: ``convert(text)`` (a ValueError: "must be <usage>"), then ``check(value,
    "value")`` from training.config (its ConfigError's message, for the flag argparse names)."""
    def parse(text: str):
        try:
            value = convert(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {usage}, got {text!r}") from None
        try:
            return check(value, "value")
        except ConfigError as e:
            raise _rewrap(e) from None

    parse.__name__ = name
    return parse


def int_arg(low: int = 1, high: Optional[int] = None, why: str = "", what: Optional[str] = None):
    """argparse type: an integer in [low, high]."""
    return checked_arg(int, lambda v, n: check_int(v, n, low, high, why, what), "an integer", "integer")


def float_arg(low: float = 0.0, strict: bool = True, high: Optional[float] = None, high_strict: bool = False,
              what: Optional[str] = None):
    """argparse type: a finite number above ``low`` (``strict``) or at least ``low`` (and up to
    ``high``); ``inf``, ``nan`` and their spellings are refused."""
    return checked_arg(float, lambda v, n: check_number(v, n, low, strict, high, high_strict, what), "a number",
                       "number")


positive_int = int_arg(1)
non_negative_int = int_arg(0)
positive_float = float_arg(0.0)
non_negative_float = float_arg(0.0, strict=False)


#: argparse type of --seed: an integer from 0 to ``training.config.MAX_SEED``
seed_arg = checked_arg(int, check_seed, f"an integer from 0 to {MAX_SEED}", "seed")

#: K of --hypernet-passes: 1 to MAX_PASSES (hypernet.base: each pass is one more forward)
passes_arg = int_arg(1, MAX_PASSES, why="each pass is one more forward of the hypernetwork")
side_arg = int_arg(1, MAX_IMAGE_SIDE, why="far above the sides the supported models are made for")


def _int_tuple(text: str) -> tuple:
    return tuple(int(part) for part in text.split(",") if part.strip())


#: argparse type of --seeds: comma-separated seeds, each once (``training.config.check_seeds``)
seed_list = checked_arg(_int_tuple, check_seeds, "comma-separated integers, e.g. 0,1,2,3", "seeds")


def machine_cores() -> int:
    """The cores this process may run on."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_arg(text: str) -> int:
    """argparse type of --threads: 1 to 4 x this machine's cores (a value beyond is a typo: more
    threads than cores only slow PyTorch down, see ``auto_threads``)."""
    cores = machine_cores()
    return int_arg(1, 4 * cores, why=f"4 x this machine's {cores} cores; more threads than cores only slow PyTorch "
                                     f"down")(text)


threads_arg.__name__ = "threads"


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--generator", default="shapes", help="generator name, or auto to detect it from --pretrained (default: shapes, the built-in world)")
    g.add_argument("--pretrained", default=None, help="Hugging Face model id or local folder of the generator's weights")
    g.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    g.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: bfloat16 on GPU, float32 on CPU)")
    g.add_argument("--height", type=side_arg, default=None,
                   help=f"image height in pixels, 1 to {MAX_IMAGE_SIDE} (default: the model's own; a generator of one "
                        "size refuses another)")
    g.add_argument("--width", type=side_arg, default=None,
                   help=f"image width in pixels, 1 to {MAX_IMAGE_SIDE} (default: the model's own)")
    g.add_argument("--prompt-cache-mb", type=non_negative_float, default=None, metavar="MB",
                   help="bound of the prompt-embedding cache, least recently used prompts dropped first "
                        "(default 1024; 0: no cache)")
    g.add_argument("--threads", type=threads_arg, default=None,
                   help="CPU threads, 1 to this machine's cores (default: the idle cores; 1 for toy2d)")


def adapter_size_defaults(args) -> None:
    """With ``--adapter`` and neither ``--height`` nor ``--width``: the adapter's training size (as
    ``hypernoise.attach`` reads it), so that an adapter trained at 512 px runs at 512 px."""
    if getattr(args, "adapter", None) and args.height is None and args.width is None:
        from hypernoise.adapter import adapter_size

        args.height, args.width = adapter_size(args.adapter)


def model_config(args) -> ModelConfig:
    return ModelConfig(generator=args.generator, pretrained=args.pretrained, device=args.device, dtype=args.dtype,
                       height=args.height, width=args.width, prompt_cache_mb=getattr(args, "prompt_cache_mb", None))


def busy_cores(loadavg: str = "/proc/loadavg", samples: int = 5, gap_s: float = 0.05) -> float:
    """How many cores other work keeps busy now: the fewest runnable tasks besides this one over
    ``samples`` reads of ``loadavg`` (its fourth field, ``running/total``), ``gap_s`` apart, so a
    moment's blip does not count. Where that file is missing, the 1-minute load average; that one
    lags: a ``pip install`` that ended a minute ago still weighs about one core on it, which is
    why it is not the first choice (the README's command installs, then trains)."""
    import os
    import time

    try:
        counts = []
        for i in range(samples):
            if i:
                time.sleep(gap_s)
            with open(loadavg) as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)
        return float(max(0, min(counts)))
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except OSError:
            return 0.0


def auto_threads(generator: str) -> int:
    """CPU threads for a run: 1 for toy2d; otherwise the idle cores (cores minus ``busy_cores``,
    at least 1). Oversubscribed cores are ruinous for PyTorch on a CPU: on a busy 2-core machine a
    tiny diffusers training step took 28 s with 2 threads, 0.4 s with 1. On an idle one, a shapes
    training step (batch 64) takes 0.52 s with 2 threads and 0.82 s with 1."""
    if generator in SMALL_GENERATORS:
        return 1
    cores = machine_cores()
    return max(1, min(cores, int(cores - busy_cores() + 0.5)))


def configure_threads(args) -> None:
    """``--threads N``, else ``auto_threads``; only where the work runs on the CPU."""
    import torch

    torch.set_flush_denormal(True)
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be a positive integer, got {args.threads}")
    from hypernoise.devices import resolve_device

    on_accelerator = resolve_device(args.device).type != "cpu"
    if args.threads is not None or not on_accelerator:
        torch.set_num_threads(args.threads or auto_threads(args.generator))


def add_reward_weights_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reward-weights", action="append", default=None, metavar="NAME=PATH",
                   help="weights of one reward: a local folder, file or Hub id (repeatable), e.g. hps=weights/hps")


def add_passes_arg(p: argparse.ArgumentParser, training: bool = False) -> None:
    """``--hypernet-passes K``: how many times the noise map x <- x + f_phi(x, c) is applied."""
    where = ("in training and by default at inference (default 1, the paper's)" if training
             else "at inference (default: the adapter's, 1 unless it was trained with more)")
    p.add_argument("--hypernet-passes", type=passes_arg, default=None, metavar="K",
                   help=f"apply the hypernetwork's map x <- x + f_phi(x, c) K times {where}; each pass is one "
                        f"more forward of the backbone (1 to {MAX_PASSES})")


def hypernet_passes(args) -> Optional[int]:
    """The ``--hypernet-passes`` value, checked (None when not given)."""
    k = getattr(args, "hypernet_passes", None)
    if k is not None:
        check_int(k, "hypernet_passes", 1, MAX_PASSES, why="each pass is one more forward of the hypernetwork")
    return k


def reward_weights(args) -> dict:
    """``--reward-weights hps=DIR`` -> ``{"hps": {"pretrained": "DIR"}}`` (build_reward's per_reward)."""
    out = {}
    for item in getattr(args, "reward_weights", None) or []:
        name, sep, path = item.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"--reward-weights takes NAME=PATH, e.g. hps=weights/hps, got {item!r}")
        out[name.strip()] = {"pretrained": path.strip()}
    return out


def add_output_args(p: argparse.ArgumentParser, required: bool = True, default=None) -> None:
    p.add_argument("--out", required=required, default=default, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace the contents of an existing --out folder")


def add_train_args(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=positive_int, default=None, help=f"optimizer steps (default: the generator's, else {d.steps})")
    g.add_argument("--batch-size", type=positive_int, default=None, help=f"samples per process per micro-step (default: the generator's, else {d.batch_size})")
    g.add_argument("--gradient-accumulation-steps", type=positive_int, default=None, help="micro-steps per optimizer step (default 1)")
    g.add_argument("--lr", type=positive_float, default=None, help="learning rate")
    g.add_argument("--optimizer", choices=["sgd", "adamw"], default=None, help="sgd (momentum 0.9) or adamw")
    g.add_argument("--nesterov", action="store_true", help="Nesterov momentum for SGD")
    g.add_argument("--warmup-steps", type=non_negative_int, default=None, help="linear learning-rate warmup (default: the generator's, else 0)")
    g.add_argument("--max-grad-norm", type=non_negative_float, default=None, help=f"gradient-norm clipping, 0 for none (default: the generator's, else {d.max_grad_norm})")
    g.add_argument("--weight-decay", type=non_negative_float, default=None, help="weight decay (default: the preset's, else 0)")
    g.add_argument("--noise-mode", choices=["per-sample", "shared", "per-step", "fixed"], default=None,
                   help="initial noise per sample, one per micro-batch (shared), one per optimizer step shared by "
                        "every micro-step and process (per-step: the authors' runs), or fixed")
    g.add_argument("--num-steps", type=positive_int, default=None, help="generator steps during training (default: the generator's)")
    g.add_argument("--seed", type=seed_arg, default=0, help="seed of initialisation, prompt order and noise")
    g.add_argument("--init-trials", type=positive_int, default=None,
                   help="train this many initialisations for --trial-steps each and keep the lowest-loss one (default: the generator's, else 1)")
    g.add_argument("--trial-steps", type=positive_int, default=None, help=f"optimizer steps of each initialisation trial (default {d.trial_steps})")
    g.add_argument("--checkpoint-every", type=non_negative_int, default=0, help="write a checkpoint every N steps (0: only at the end)")
    g.add_argument("--checkpoints-total-limit", type=positive_int, default=None,
                   help="keep at most N checkpoints, N >= 1 (default: all)")
    g.add_argument("--resume", default=None, help="latest, or a checkpoint folder, to continue a run")
    g.add_argument("--lipschitz-every", type=non_negative_int, default=0, help="log the spectral norm of J_f every N steps")
    g.add_argument("--reference-processes", type=positive_int, default=None, metavar="N",
                   help="train as N processes would (the authors' runs: 6, or 7 for FLUX): their warm-up and the "
                        "prompts and noise of their optimizer steps, on processes that divide N, each accumulating "
                        "N / processes times more micro-batches (default: as launched)")
    g.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default=None, help="autocast precision (default no)")
    g.add_argument("--gradient-checkpointing", action="store_true", help="recompute backbone activations in backward")
    g.add_argument("--report-to", default=None, metavar="TRACKER",
                   help="experiment tracker, as accelerate names them: tensorboard, wandb, comet_ml, mlflow, aim, "
                        "clearml, dvclive, swanlab, trackio, or all (every one installed); its package is checked "
                        "before training")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    v = p.add_argument_group("validation (held-out prompts, never the test prompts)")
    v.add_argument("--validation-prompts", default=None, metavar="SOURCES",
                   help="held-out prompts, in --prompts' forms: base and the trained model are scored on them with the "
                        "training reward (and the world's GenEval) on fixed noises; writes OUT/validation.jsonl, "
                        "OUT/validation/step-N.png and OUT/best, the adapter of the best validation reward")
    v.add_argument("--validation-every", type=non_negative_int, default=None, metavar="N",
                   help="validate every N optimizer steps and at the end (0: only at the end; default: about ten "
                        "times a run, every steps/10)")
    v.add_argument("--validation-seeds", type=seed_list, default=None, metavar="SEEDS",
                   help=f"noise seeds per validation prompt, comma-separated (default "
                        f"{','.join(map(str, d.validation_seeds))})")


def train_settings(args) -> dict:
    """Training settings the user gave on the command line (None: not given)."""
    return dict(
        steps=args.steps, batch_size=args.batch_size, gradient_accumulation_steps=args.gradient_accumulation_steps,
        lr=args.lr, optimizer=args.optimizer, nesterov=args.nesterov or None, warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm, noise_mode=args.noise_mode, seed=args.seed, num_steps=args.num_steps,
        init_trials=args.init_trials, trial_steps=args.trial_steps,
        checkpoint_every=args.checkpoint_every, checkpoints_total_limit=args.checkpoints_total_limit,
        lipschitz_every=args.lipschitz_every, mixed_precision=args.mixed_precision,
        reference_processes=getattr(args, "reference_processes", None),
        gradient_checkpointing=args.gradient_checkpointing or None, report_to=args.report_to,
        progress=False if args.no_progress else None, validation_every=args.validation_every,
        validation_seeds=args.validation_seeds)


# ----------------------------------------------------------------- the invocation as a whole

def _option_name(action: argparse.Action) -> str:
    return max(action.option_strings, key=len) if action.option_strings else (action.metavar or action.dest).upper()


def check_invocation(args, parser: argparse.ArgumentParser) -> None:
    """Before a command runs: no option names nothing (an empty ``--prompts ''`` is an error, not
    "not given": it would fall back to another source), and every environment variable the
    library reads holds a value it understands (``env.check_environment``)."""
    from hypernoise.env import check_environment

    for action in parser._actions:
        value = getattr(args, action.dest, None)
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, str) and not v.strip() for v in values):
            name = _option_name(action)
            leave = f" or leave {name} out" if action.option_strings else ""
            raise ConfigError(f"empty {name}: it names nothing; pass a value{leave}")
    check_environment()
