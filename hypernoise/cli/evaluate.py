"""``hypernoise evaluate``: a method on a prompt set: quality, fidelity and cost."""

from __future__ import annotations

import json


def _seeds(text) -> tuple:
    from hypernoise.errors import ConfigError

    if not isinstance(text, str):  # already parsed by --seeds' type (cli.common.seed_list)
        return tuple(text)
    try:
        seeds = tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--seeds must be comma-separated integers, e.g. 0,1,2,3, got {text!r}") from None
    return seeds


def _budgets(text: str) -> tuple:
    """``--budgets 1,2,5`` -> (1, 2, 5) (checked in ``EvalConfig``)."""
    import argparse

    try:
        return tuple(int(b) for b in text.split(",") if b.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, e.g. 1,2,5, got {text!r}") from None


def add_arguments(p) -> None:
    from hypernoise.cli.common import (add_model_args, add_output_args, add_passes_arg, add_reward_weights_arg,
                                       positive_int, seed_list)
    from hypernoise.methods import METHODS

    add_model_args(p)
    p.add_argument("--method", choices=list(METHODS), default="base", help="what generates the images")
    p.add_argument("--adapter", default=None,
                   help="adapter folder (hypernoise, hypernoise-reno, finetune), or a Hub id "
                        "OWNER/NAME[@REVISION][/SUBFOLDER]")
    p.add_argument("--prompts", default=None, help="prompt file, one per line or JSONL (GenEval metadata); default: the generator's test prompts")
    p.add_argument("--seeds", type=seed_list, default="0,1,2,3",
                   help="comma-separated seeds per prompt, each once (default 0,1,2,3)")
    p.add_argument("--num-steps", type=positive_int, default=None, help="generator steps (default: the generator's)")
    p.add_argument("--reward", default=None, help="reward spec of reno / best-of-n (default: the generator's)")
    add_reward_weights_arg(p)
    p.add_argument("--score-with", default=None, help="reward spec to report (default: --reward)")
    p.add_argument("--iters", type=positive_int, default=50, help="ReNO iterations")
    p.add_argument("--optimize-steps", type=positive_int, default=None, metavar="K",
                   help="generator steps ReNO optimises the noise through before rendering the best at --num-steps "
                        "(default: 1 for flux-schnell, else --num-steps)")
    p.add_argument("--n", type=positive_int, default=50, help="N of best-of-N")
    p.add_argument("--budgets", type=_budgets, default=(), metavar="B,B,...",
                   help="also score the nested budgets of one run: ReNO / hypernoise-reno after B iterations, "
                        "best-of-n at N = B (each at most --iters / --n); into results.json's budgets")
    add_passes_arg(p)
    p.add_argument("--batch-size", type=positive_int, default=8, help="images per batch")
    p.add_argument("--geneval-layout", action="store_true", help="also write GenEval's folder layout of PNGs")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (evaluate draws none today; accepted as on every command that runs a model)")
    add_output_args(p)


def run(args) -> int:
    from hypernoise.cli.common import configure_threads, hypernet_passes, model_config, reward_weights
    from hypernoise.errors import ConfigError
    from hypernoise.evaluation import EvalConfig, evaluate
    from hypernoise.io import output_folder, read_prompt_records
    from hypernoise.methods.reno import RenoConfig
    from hypernoise.rewards import parse_spec

    configure_threads(args)
    reno = RenoConfig(iters=args.iters, optimize_steps=args.optimize_steps)
    cfg = EvalConfig(method=args.method, seeds=_seeds(args.seeds), num_steps=args.num_steps, reward=args.reward,
                     score_with=args.score_with, adapter=args.adapter, n=args.n, reno=reno,
                     passes=hypernet_passes(args), batch_size=args.batch_size, geneval_layout=args.geneval_layout,
                     reward_weights=reward_weights(args), budgets=args.budgets)
    for spec in (args.reward, args.score_with):
        if spec:
            parse_spec(spec)
    records = read_prompt_records(args.prompts) if args.prompts else None
    generator = model_config(args).build()
    prompts = [r["prompt"] for r in records] if records else generator.default_prompts("test")
    if not prompts:
        raise ConfigError(f"generator {generator.name!r} has no built-in test prompts; pass --prompts FILE")
    generator.check_prompts(prompts)
    inputs = {"prompts": args.prompts, "adapter": args.adapter, "pretrained": args.pretrained,
              "reward_weights": [w.partition("=")[2] for w in args.reward_weights or []]}
    with output_folder(args.out, overwrite=args.overwrite, inputs=inputs, command="hypernoise evaluate") as out:
        results = evaluate(generator, prompts, cfg, out, records=records)
        print(json.dumps({k: results[k] for k in ("method", "rewards", "cost") if k in results}, indent=1))
        if "geneval" in results:
            print("geneval: " + ", ".join(f"{k} {v:.3f}" for k, v in results["geneval"].items() if v is not None))
        print(f"wrote {out}/results.json and {out}/per_prompt.jsonl")
        return 0
