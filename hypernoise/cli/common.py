"""Options shared by several commands, and their conversion into config objects."""

from __future__ import annotations

import argparse

from hypernoise.errors import ConfigError
from hypernoise.methods.hypernoise import ModelConfig
from hypernoise.training.config import TrainConfig

#: generators small enough that one thread per process is fastest (NOTES.md: 2-7x on 2 cores)
SMALL_GENERATORS = ("toy2d", "shapes")


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--generator", default="shapes", help="generator name, or auto to detect it from --pretrained (default: shapes, the built-in world)")
    g.add_argument("--pretrained", default=None, help="Hugging Face model id or local folder of the generator's weights")
    g.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    g.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: bfloat16 on GPU, float32 on CPU)")
    g.add_argument("--threads", type=int, default=None, help="CPU threads (default: 1 for the built-in worlds, torch's default otherwise)")


def model_config(args) -> ModelConfig:
    return ModelConfig(generator=args.generator, pretrained=args.pretrained, device=args.device, dtype=args.dtype)


def configure_threads(args) -> None:
    """One thread for tiny built-in models (faster on a busy machine), else torch's default."""
    import torch

    torch.set_flush_denormal(True)
    threads = args.threads if args.threads is not None else (1 if args.generator in SMALL_GENERATORS else None)
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads must be a positive integer, got {threads}")
        torch.set_num_threads(threads)


def add_output_args(p: argparse.ArgumentParser, required: bool = True, default=None) -> None:
    p.add_argument("--out", required=required, default=default, help="output folder")
    p.add_argument("--overwrite", action="store_true", help="replace the contents of an existing --out folder")


def add_train_args(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=None, help=f"optimizer steps (default: the generator's, else {d.steps})")
    g.add_argument("--batch-size", type=int, default=None, help=f"samples per process per micro-step (default: the generator's, else {d.batch_size})")
    g.add_argument("--gradient-accumulation-steps", type=int, default=1, help="micro-steps per optimizer step")
    g.add_argument("--lr", type=float, default=None, help="learning rate")
    g.add_argument("--optimizer", choices=["sgd", "adamw"], default=None, help="sgd (momentum 0.9) or adamw")
    g.add_argument("--nesterov", action="store_true", help="Nesterov momentum for SGD")
    g.add_argument("--warmup-steps", type=int, default=0, help="linear learning-rate warmup")
    g.add_argument("--max-grad-norm", type=float, default=d.max_grad_norm, help="gradient-norm clipping (0: off)")
    g.add_argument("--noise-mode", choices=["per-sample", "shared", "fixed"], default=None,
                   help="initial noise per sample, shared per batch (the paper), or fixed")
    g.add_argument("--num-steps", type=int, default=None, help="generator steps during training (default: the generator's)")
    g.add_argument("--seed", type=int, default=0, help="seed of initialisation, prompt order and noise")
    g.add_argument("--checkpoint-every", type=int, default=0, help="write a checkpoint every N steps (0: only at the end)")
    g.add_argument("--checkpoints-total-limit", type=int, default=None, help="keep at most N checkpoints")
    g.add_argument("--resume", default=None, help="latest, or a checkpoint folder, to continue a run")
    g.add_argument("--lipschitz-every", type=int, default=0, help="log the spectral norm of J_f every N steps")
    g.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no", help="autocast precision")
    g.add_argument("--gradient-checkpointing", action="store_true", help="recompute backbone activations in backward")
    g.add_argument("--report-to", choices=["tensorboard", "wandb"], default=None, help="experiment tracker")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def _pick(given, defaults: dict, key: str):
    """The user's value, else the generator's default, else TrainConfig's."""
    if given is not None:
        return given
    return defaults.get(key, getattr(TrainConfig, key))


def train_config(args, defaults: dict) -> TrainConfig:
    """A validated TrainConfig from the command line over the generator's ``train_defaults``."""
    return TrainConfig(
        steps=_pick(args.steps, defaults, "steps"), batch_size=_pick(args.batch_size, defaults, "batch_size"),
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        lr=_pick(args.lr, defaults, "lr"), optimizer=_pick(args.optimizer, defaults, "optimizer"), nesterov=args.nesterov,
        warmup_steps=args.warmup_steps, max_grad_norm=args.max_grad_norm or None,
        noise_mode=_pick(args.noise_mode, defaults, "noise_mode"),
        seed=args.seed, num_steps=args.num_steps, checkpoint_every=args.checkpoint_every,
        checkpoints_total_limit=args.checkpoints_total_limit, lipschitz_every=args.lipschitz_every,
        mixed_precision=args.mixed_precision, gradient_checkpointing=args.gradient_checkpointing,
        report_to=args.report_to, progress=not args.no_progress)
