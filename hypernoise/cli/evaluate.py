"""``hypernoise evaluate``: a method on a prompt set: quality, fidelity and cost."""

from __future__ import annotations

import json

#: what evaluate writes at the top of --out (io.output_folder's ``writes``): results, rows, settings,
#: GenEval's records and its layout's <index> folders
EVALUATE_WRITES = ("results.json", "per_prompt.jsonl", "per_image.jsonl", "evaluate.json", "results.jsonl",
                   "[0-9][0-9][0-9][0-9][0-9]*", "report")  # report: geneval.report.REPORT_DIR


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
    from hypernoise.cli.geneval import add_geneval_args
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
    p.add_argument("--preset", choices=["reno"], default=None,
                   help="with --method reno or hypernoise-reno: ExplainableML/ReNO's own settings for the family "
                        "(sd-turbo, flux-schnell: fp16, 1 step, their weights and rewards; docs/comparisons.md); "
                        "flags given override it")
    p.add_argument("--iters", type=positive_int, default=None, help="ReNO iterations (default 50)")
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
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--resume", nargs="?", const="latest", choices=["latest"], default=None,
                   help="continue an interrupted evaluation in --out with the images not yet made (same settings)")
    p.add_argument("--benchmark", choices=["geneval"], default=None,
                   help="geneval: GenEval's 553 prompts (or --prompts in its format) x --seeds, written in its layout "
                        "and scored by GenEval (--detector, --clip; docs/geneval.md): the paper's metric")
    add_geneval_args(p)
    add_output_args(p)
    p.set_defaults(geneval_dtype=None)


def run(args) -> int:
    from hypernoise.cli.common import (adapter_size_defaults, configure_threads, hypernet_passes, model_config,
                                       reward_weights)
    from hypernoise.errors import ConfigError
    from hypernoise.evaluation import EvalConfig, evaluate
    from hypernoise.io import output_folder
    from hypernoise.presets import reno_settings
    from hypernoise.rewards import parse_spec

    configure_threads(args)
    if args.preset and args.method not in ("reno", "hypernoise-reno"):
        raise ConfigError(f"--preset {args.preset} sets ReNO's settings: it applies to --method reno or "
                          f"hypernoise-reno, not {args.method}")
    run = reno_settings(model_config(args), args.preset, reward=args.reward, iters=args.iters,
                        optimize_steps=args.optimize_steps)
    cfg = EvalConfig(method=args.method, seeds=_seeds(args.seeds), num_steps=args.num_steps or run.reno.num_steps,
                     reward=run.reward, score_with=args.score_with, adapter=args.adapter, n=args.n, reno=run.reno,
                     passes=hypernet_passes(args), batch_size=args.batch_size,
                     geneval_layout=args.geneval_layout or args.benchmark == "geneval",
                     reward_weights=reward_weights(args), reward_dtype=run.reward_dtype, budgets=args.budgets)
    for spec in (args.reward, args.score_with):
        if spec:
            parse_spec(spec)
    records = _prompt_records(args)
    if args.benchmark:  # a bad rule value, a missing detector, untagged prompts: one line, before any model loads
        _check_geneval_args(args, records)
    adapter_size_defaults(args)  # an adapter trained at another size: its size, not a refusal
    generator = reno_settings(model_config(args), args.preset).model.build()  # the preset's weights and size
    prompts = [r["prompt"] for r in records] if records else generator.default_prompts("test")
    if not prompts:
        raise ConfigError(f"generator {generator.name!r} has no built-in test prompts; pass --prompts FILE")
    generator.check_prompts(prompts)
    judge = _geneval_judge(args, records) if args.benchmark == "geneval" else None
    inputs = {"prompts": args.prompts, "adapter": args.adapter, "pretrained": args.pretrained,
              "reward_weights": [w.partition("=")[2] for w in args.reward_weights or []],
              "detector": args.detector if args.benchmark else None}
    with output_folder(args.out, overwrite=args.overwrite, resume=bool(args.resume), inputs=inputs,
                       command="hypernoise evaluate", writes=EVALUATE_WRITES) as out:
        results = evaluate(generator, prompts, cfg, out, records=records, judge=judge, resume=bool(args.resume),
                           progress=not args.no_progress)
        print(json.dumps({k: results[k] for k in ("method", "rewards", "cost") if k in results}, indent=1))
        _print_geneval(results, judge)
        print(f"wrote {out}/results.json and {out}/per_prompt.jsonl"
              + (f" and {out}/{judge.records_file} (GenEval's records)" if judge is not None else ""))
        if judge is not None and (out / judge.records_file).is_file():
            from hypernoise.cli.geneval import write_geneval_report

            write_geneval_report(out / judge.records_file, out)
        return 0


def _prompt_records(args):
    """The prompt file's rows; with --benchmark geneval and no --prompts, GenEval's own 553."""
    from hypernoise.io import read_prompt_records

    if args.prompts:
        return read_prompt_records(args.prompts)
    if args.benchmark == "geneval":
        from hypernoise.geneval.metadata import load_metadata

        return load_metadata()
    return None


def _check_geneval_args(args, records) -> None:
    """--benchmark geneval's inputs: the rules' values, a detector, and GenEval metadata per prompt."""
    from hypernoise.cli.geneval import options_from_args
    from hypernoise.errors import ConfigError
    from hypernoise.geneval.metadata import row_problem

    options_from_args(args)
    if not args.detector:
        raise ConfigError("--benchmark geneval needs GenEval's detector: pass --detector CKPT (the official "
                          "mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth, see docs/geneval.md)")
    bad = [(r.get("prompt"), row_problem(r)) for r in records if row_problem(r)]
    if bad:
        raise ConfigError(f"--benchmark geneval scores prompts with GenEval's metadata, and the row of {bad[0][0]!r} "
                          f"is not one ({bad[0][1]}; {len(bad)} such); pass a file in evaluation_metadata.jsonl's "
                          f"format, or no --prompts")


def _geneval_judge(args, records):
    """GenEval as the evaluation's judge, with the rows as its metadata."""
    from hypernoise.cli.geneval import load_scorer
    from hypernoise.geneval.scoring import GenEvalJudge

    scorer, settings = load_scorer(args, getattr(args, "batch_size", 4))
    return GenEvalJudge(scorer, records, settings)


def _print_geneval(results: dict, judge) -> None:
    if "geneval" not in results:
        return
    if judge is not None:
        from hypernoise.geneval.scoring import TASK_HEADERS

        names = {"overall": "overall", **TASK_HEADERS}
        print("geneval: " + ", ".join(f"{names.get(k, k)} {v:.3f}" for k, v in results["geneval"].items() if v is not None))
        return
    print("geneval: " + ", ".join(f"{k} {v:.3f}" for k, v in results["geneval"].items() if v is not None))
