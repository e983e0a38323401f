"""``hypernoise optimize``: ReNO, test-time optimisation of the initial noise per prompt; with
``--adapter DIR``, HyperNoise-initialised ReNO (started from x0 + f_phi(x0, c)).

Prompts are optimised one after another; each finished prompt's row is appended to
``results.jsonl`` and its image written at once, so an interrupted run keeps every finished
prompt, and ``--resume latest`` continues with the next one. ``optimize.json`` records what
defines the run (generator, reward, ReNO settings, seed, prompts); a resume with other settings
is refused naming the first that differs.
"""

from __future__ import annotations

import json
from pathlib import Path

SETTINGS_FILE = "optimize.json"
RESULTS_FILE = "results.jsonl"


def add_arguments(p) -> None:
    from hypernoise.cli.common import (add_model_args, add_output_args, add_passes_arg, add_reward_weights_arg,
                                       non_negative_float, positive_float, positive_int, seed_arg)
    from hypernoise.methods.reno import RenoConfig

    d = RenoConfig()
    add_model_args(p)
    p.add_argument("--preset", choices=["reno"], default=None,
                   help="reno: ExplainableML/ReNO's own settings for the family (sd-turbo, flux-schnell: fp16, 1 step, "
                        "their weights and rewards; docs/comparisons.md); flags given override it")
    p.add_argument("--reward", default=None, help="reward spec to maximise (default: the generator's)")
    add_reward_weights_arg(p)
    p.add_argument("--prompt", action="append", default=None, help="a prompt (repeatable)")
    p.add_argument("--prompts", default=None, help="prompt file, one per line or JSONL")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the initial noise")
    p.add_argument("--iters", type=positive_int, default=None, help=f"iterations (default {d.iters})")
    p.add_argument("--lr", type=positive_float, default=None, help=f"SGD learning rate (default {d.lr})")
    p.add_argument("--max-grad-norm", type=positive_float, default=None,
                   help=f"per-sample gradient clipping, > 0 (default {d.max_grad_norm})")
    p.add_argument("--norm-reg", type=non_negative_float, default=None,
                   help=f"weight of the chi-norm regulariser, >= 0 (default {d.norm_reg})")
    p.add_argument("--num-steps", type=positive_int, default=None,
                   help="generator steps of the returned image (default: the generator's)")
    p.add_argument("--optimize-steps", type=positive_int, default=None, metavar="K",
                   help="generator steps the noise is optimised through; the best noise is then rendered at "
                        "--num-steps (default: 1 for flux-schnell, as ReNO's --enable_multi_apply mode, else --num-steps)")
    p.add_argument("--adapter", default=None,
                   help="a trained HyperNoise adapter folder (or Hub id): start ReNO from x0 + f_phi(x0, c) instead of "
                        "x0 (HyperNoise-initialised ReNO, semi-amortised)")
    add_passes_arg(p)
    p.add_argument("--save-iterates", action="store_true", help="also save the image of every iteration")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--resume", nargs="?", const="latest", choices=["latest"], default=None,
                   help="continue an interrupted run in --out with its next unfinished prompt (same settings)")
    add_output_args(p)


def _steps(res) -> dict:
    """The steps ReNO optimised through and rendered at, and the reward of the render where they differ."""
    out = {"optimize_steps": res.extras["optimize_steps"], "render_steps": res.extras["render_steps"]}
    if "rendered_reward" in res.extras:
        out["rendered_reward"] = float(res.extras["rendered_reward"][0])
    return out


def _settings(args, generator, reward, cfg, prompts, run) -> dict:
    """What defines an optimize run, as checked on resume."""
    return {**generator.describe(), "reward": reward.spec(), "reward_weights": sorted(args.reward_weights or []),
            "seed": args.seed, "iters": cfg.iters, "lr": cfg.lr, "max_grad_norm": cfg.max_grad_norm,
            "norm_reg": cfg.norm_reg, "num_steps": cfg.num_steps, "optimize_steps": cfg.optimize_steps,
            "save_iterates": cfg.keep_iterates, "prompts": list(prompts),
            **({"preset": args.preset, "noise_dtype": cfg.noise_dtype, "reward_dtype": run.reward_dtype}
               if args.preset else {}),
            **({"adapter": args.adapter, "hypernet_passes": args.hypernet_passes} if args.adapter else {})}


def _finished(out: Path, settings: dict) -> int:
    """How many prompts of the run in ``out`` are finished, after checking that it is the same
    run; a row torn by a kill (the last line, unparsable) is dropped from ``results.jsonl``."""
    from hypernoise.errors import ConfigError, InputFileError

    try:
        saved = json.loads((out / SETTINGS_FILE).read_text())
    except FileNotFoundError:
        raise ConfigError(f"nothing to resume in {out}: it holds no {SETTINGS_FILE} of an optimize run; pass "
                          f"another `out`, or `overwrite` to start afresh") from None
    except (OSError, ValueError) as e:
        raise InputFileError(f"cannot read {out / SETTINGS_FILE} ({e}); pass `overwrite` to start afresh") from None
    for key, value in settings.items():
        if not isinstance(saved, dict) or saved.get(key) != value:
            was = saved.get(key) if isinstance(saved, dict) else saved
            shown = "the prompts" if key == "prompts" else f"`{key}`"
            raise ConfigError(f"cannot resume the run in {out}: {shown} differ (the run: {_short(was)}, now: "
                              f"{_short(value)}); pass the run's settings, or another `out`")
    rows = []
    path = out / RESULTS_FILE
    for line in (path.read_text().splitlines() if path.exists() else []):
        try:
            row = json.loads(line)
        except ValueError:
            break
        if not isinstance(row, dict) or row.get("index") != len(rows):
            break
        rows.append(line)
    path.write_text("".join(r + "\n" for r in rows))
    return len(rows)


def _short(value, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run(args) -> int:
    from hypernoise.cli.common import configure_threads, hypernet_passes, model_config, reward_weights
    from hypernoise.devices import parse_dtype
    from hypernoise.errors import ConfigError, Interrupted
    from hypernoise.io import find_prompts, output_folder, write_json
    from hypernoise.presets import reno_settings
    from hypernoise.rewards import build_reward, parse_spec

    configure_threads(args)
    run = reno_settings(model_config(args), args.preset, reward=args.reward, iters=args.iters, lr=args.lr,
                        max_grad_norm=args.max_grad_norm, norm_reg=args.norm_reg, num_steps=args.num_steps,
                        optimize_steps=args.optimize_steps, keep_iterates=args.save_iterates or None)
    cfg = run.reno
    if args.reward:
        parse_spec(args.reward)
    prompts = find_prompts(args.prompt, args.prompts)
    if not prompts:
        raise ConfigError("no prompt given; pass --prompt TEXT (repeatable) or --prompts FILE")
    if hypernet_passes(args) is not None and not args.adapter:
        raise ConfigError("--hypernet-passes applies with --adapter (HyperNoise-initialised ReNO)")
    generator = run.model.build()
    generator.check_prompts(prompts)
    hypernet = _load_hypernet(generator, args.adapter) if args.adapter else None
    reward = build_reward(run.reward or generator.default_reward, device=str(generator.device),
                          dtype=parse_dtype(run.reward_dtype, field="reward_dtype"), per_reward=reward_weights(args))
    settings = _settings(args, generator, reward, cfg, prompts, run)
    inputs = {"prompts": args.prompts, "pretrained": args.pretrained, "adapter": args.adapter,
              "reward_weights": [w.partition("=")[2] for w in args.reward_weights or []]}
    with output_folder(args.out, overwrite=args.overwrite, resume=bool(args.resume), inputs=inputs,
                       command="hypernoise optimize", writes=(SETTINGS_FILE, RESULTS_FILE, "*-best.png", "iterates")) as out:
        start = 0
        if args.resume and any(not p.name.startswith(".hypernoise") for p in out.iterdir()):
            start = _finished(out, settings)
        elif args.resume:
            print(f"nothing to resume in {out}: starting afresh", flush=True)
        if start == 0:
            write_json(out / SETTINGS_FILE, settings)
        elif start == len(prompts):
            print(f"nothing to resume: all {start} prompts of {out} are finished")
            return 0
        else:
            print(f"resuming at prompt {start + 1} of {len(prompts)}", flush=True)
        try:
            for i in range(start, len(prompts)):
                _optimize_one(generator, reward, cfg, prompts, i, args, out, hypernet)
        except KeyboardInterrupt:
            done = _finished(out, settings)
            raise Interrupted(f"interrupted: {done} of {len(prompts)} prompts finished ({out}/{RESULTS_FILE}); "
                              f"continue with `resume` latest --out {out}") from None
        print(f"wrote {out}/{RESULTS_FILE} and the best image per prompt")
        return 0


def _load_hypernet(generator, adapter: str):
    """The HyperNoise adapter ``--adapter`` names, loaded through its method (an AdapterError, one
    line, when it is not one that fits the generator)."""
    from hypernoise.methods import METHODS

    return METHODS.get("hypernoise-reno").load_adapter(generator, adapter)


def _optimize_one(generator, reward, cfg, prompts, i: int, args, out: Path, hypernet=None) -> None:
    """ReNO on prompt ``i`` (from the hypernetwork's noise where there is one): its best image (and
    iterates), then its row in results.jsonl."""
    from hypernoise.methods.generate import save_png, seeded_noise
    from hypernoise.methods.hypernoise_reno import hypernoise_reno
    from hypernoise.methods.reno import reno

    prompt = prompts[i]
    noise = seeded_noise(generator, args.seed)[0]
    common = dict(progress=not args.no_progress, seeds=[args.seed])
    if hypernet is None:
        res, method = reno(generator, reward, noise, [prompt], cfg, **common), {}
    else:
        res = hypernoise_reno(generator, reward, hypernet, noise, [prompt], cfg, passes=args.hypernet_passes, **common)
        method = {"method": "hypernoise-reno", "adapter": args.adapter}
    history = res.extras["reward_history"][0].tolist()
    row = {"index": i, "prompt": prompt, "seed": args.seed, **method, "best_reward": float(res.reward[0]),
           "initial_reward": history[0], "reward_history": history, **_steps(res)}
    save_png(res.samples[0], out / f"{i:03d}-best.png", prompt, args.seed,
             {"method": "reno", **method, "reward": row["best_reward"], "reward_spec": reward.spec(), **_steps(res)})
    for it, image in enumerate(res.extras.get("iterates", [[]])[0]):
        save_png(image, out / "iterates" / f"{i:03d}" / f"{it:03d}.png", prompt, args.seed, {"iteration": it})
    with open(out / RESULTS_FILE, "a") as log:  # the row last: a prompt with a row has its images
        log.write(json.dumps({**row, "cost": res.cost.to_dict()}) + "\n")
    rendered = f" ({row['render_steps']}-step render: {row['rendered_reward']:.4g})" if "rendered_reward" in row else ""
    print(f"[{i + 1}/{len(prompts)}] {prompt!r}: reward {history[0]:.4g} -> {row['best_reward']:.4g}{rendered}",
          flush=True)
