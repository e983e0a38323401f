"""``hypernoise optimize``: ReNO, test-time optimisation of the initial noise per prompt."""

from __future__ import annotations

import json


def add_arguments(p) -> None:
    from hypernoise.cli.common import (add_model_args, add_output_args, add_reward_weights_arg, non_negative_float,
                                       positive_float, positive_int, seed_arg)
    from hypernoise.methods.reno import RenoConfig

    d = RenoConfig()
    add_model_args(p)
    p.add_argument("--reward", default=None, help="reward spec to maximise (default: the generator's)")
    add_reward_weights_arg(p)
    p.add_argument("--prompt", action="append", default=None, help="a prompt (repeatable)")
    p.add_argument("--prompts", default=None, help="prompt file, one per line or JSONL")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the initial noise")
    p.add_argument("--iters", type=positive_int, default=d.iters, help=f"iterations (default {d.iters})")
    p.add_argument("--lr", type=positive_float, default=d.lr, help=f"SGD learning rate (default {d.lr})")
    p.add_argument("--max-grad-norm", type=positive_float, default=d.max_grad_norm,
                   help=f"per-sample gradient clipping, > 0 (default {d.max_grad_norm})")
    p.add_argument("--norm-reg", type=non_negative_float, default=d.norm_reg,
                   help=f"weight of the chi-norm regulariser, >= 0 (default {d.norm_reg})")
    p.add_argument("--num-steps", type=positive_int, default=None,
                   help="generator steps of the returned image (default: the generator's)")
    p.add_argument("--optimize-steps", type=positive_int, default=None, metavar="K",
                   help="generator steps the noise is optimised through; the best noise is then rendered at "
                        "--num-steps (default: 1 for flux-schnell, the authors' FLUX setting, else --num-steps)")
    p.add_argument("--save-iterates", action="store_true", help="also save the image of every iteration")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_output_args(p)


def _steps(res) -> dict:
    """The steps ReNO optimised through and rendered at, and the reward of the render where they differ."""
    out = {"optimize_steps": res.extras["optimize_steps"], "render_steps": res.extras["render_steps"]}
    if "rendered_reward" in res.extras:
        out["rendered_reward"] = float(res.extras["rendered_reward"][0])
    return out


def run(args) -> int:
    from hypernoise.cli.common import configure_threads, model_config, reward_weights
    from hypernoise.errors import ConfigError
    from hypernoise.io import find_prompts, output_folder
    from hypernoise.methods.generate import save_png, seeded_noise
    from hypernoise.methods.reno import RenoConfig, reno
    from hypernoise.rewards import build_reward, parse_spec

    configure_threads(args)
    cfg = RenoConfig(iters=args.iters, lr=args.lr, max_grad_norm=args.max_grad_norm, norm_reg=args.norm_reg,
                     num_steps=args.num_steps, optimize_steps=args.optimize_steps, keep_iterates=args.save_iterates)
    if args.reward:
        parse_spec(args.reward)
    prompts = find_prompts(args.prompt, args.prompts)
    if not prompts:
        raise ConfigError("no prompt given; pass --prompt TEXT (repeatable) or --prompts FILE")
    generator = model_config(args).build()
    generator.check_prompts(prompts)
    reward = build_reward(args.reward or generator.default_reward, device=str(generator.device),
                          per_reward=reward_weights(args))
    inputs = {"prompts": args.prompts, "pretrained": args.pretrained,
              "reward_weights": [w.partition("=")[2] for w in args.reward_weights or []]}
    with output_folder(args.out, overwrite=args.overwrite, inputs=inputs, command="hypernoise optimize") as out:
        with open(out / "results.jsonl", "w") as log:
            for i, prompt in enumerate(prompts):
                noise = seeded_noise(generator, args.seed)[0]
                res = reno(generator, reward, noise, [prompt], cfg, progress=not args.no_progress, seeds=[args.seed])
                history = res.extras["reward_history"][0].tolist()
                row = {"index": i, "prompt": prompt, "seed": args.seed, "best_reward": float(res.reward[0]),
                       "initial_reward": history[0], "reward_history": history, **_steps(res)}
                save_png(res.samples[0], out / f"{i:03d}-best.png", prompt, args.seed,
                         {"method": "reno", "reward": row["best_reward"], "reward_spec": reward.spec(), **_steps(res)})
                for it, image in enumerate(res.extras.get("iterates", [[]])[0]):
                    save_png(image, out / "iterates" / f"{i:03d}" / f"{it:03d}.png", prompt, args.seed, {"iteration": it})
                log.write(json.dumps({**row, "cost": res.cost.to_dict()}) + "\n")
                rendered = (f" ({row['render_steps']}-step render: {row['rendered_reward']:.4g})"
                            if "rendered_reward" in row else "")
                print(f"[{i + 1}/{len(prompts)}] {prompt!r}: reward {history[0]:.4g} -> {row['best_reward']:.4g}{rendered}")
        print(f"wrote {out}/results.jsonl and the best image per prompt")
        return 0
