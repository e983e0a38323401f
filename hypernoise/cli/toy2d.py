"""``hypernoise toy2d``: the analytic 2-D check of the theory."""

from __future__ import annotations

import json


def add_arguments(p) -> None:
    from hypernoise.cli.common import (add_output_args, float_arg, non_negative_int, positive_float, positive_int,
                                       seed_arg)
    from hypernoise.toy2d import Toy2DConfig

    d = Toy2DConfig()
    p.add_argument("--reward", choices=["halfplane", "ring", "corner"], default=d.reward, help="reward on y = g(x0)")
    p.add_argument("--alpha", type=float_arg(what="positive"), default=d.alpha, help="temperature of the tilt exp(r/alpha)")
    p.add_argument("--objective", choices=["exact", "l2"], default=d.objective, help="exact KL or the paper's L2")
    p.add_argument("--steps", type=positive_int, default=d.steps, help=f"optimizer steps (default {d.steps})")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size, help="noise samples per step")
    p.add_argument("--lr", type=positive_float, default=d.lr, help="AdamW learning rate")
    p.add_argument("--seed", type=seed_arg, default=d.seed, help="seed of initialisation and noise")
    p.add_argument("--n-eval", type=positive_int, default=d.n_eval, help="fresh noise samples for evaluation")
    p.add_argument("--checkpoint-every", type=non_negative_int, default=0, help="checkpoint every N steps")
    p.add_argument("--resume", default=None, help="latest, or a checkpoint folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_output_args(p)


def run(args) -> int:
    import torch

    from hypernoise.errors import Interrupted
    from hypernoise.io import output_folder
    from hypernoise.toy2d import OUTPUTS, Toy2DConfig, run_toy2d

    cfg = Toy2DConfig(reward=args.reward, alpha=args.alpha, objective=args.objective, steps=args.steps,
                      batch_size=args.batch_size, lr=args.lr, seed=args.seed, n_eval=args.n_eval,
                      checkpoint_every=args.checkpoint_every, progress=not args.no_progress)
    cfg.train_config()  # validate before touching the output folder
    torch.set_num_threads(1)
    inputs = {"resume": args.resume if args.resume != "latest" else None}
    with output_folder(args.out, overwrite=args.overwrite, resume=bool(args.resume), inputs=inputs,
                       command="hypernoise toy2d", writes=OUTPUTS, distributed=True) as out:
        metrics = run_toy2d(cfg, out, resume=args.resume)
        if metrics.get("interrupted"):
            raise Interrupted(f"interrupted at step {metrics['step']}: checkpoint written; continue with --resume "
                              f"latest --out {out}")
        print(json.dumps({k: metrics[k] for k in ("kl_to_tilted", "mean_abs_error", "lipschitz_max", "reward_base",
                                                  "reward_learned")}, indent=1))
        print(f"wrote {out}/samples.npz, {out}/metrics.json, {out}/toy2d.png")
        return 0
