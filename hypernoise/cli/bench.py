"""``hypernoise bench``: base, HyperNoise, ReNO, best-of-N and direct fine-tuning side by side, and
the frontier: every noise method at several budgets (HyperNoise-initialised ReNO among them)."""

from __future__ import annotations


def add_arguments(p) -> None:
    from hypernoise.cli.geneval import add_geneval_args

    from hypernoise.cli.common import (MAX_PASSES, add_model_args, add_output_args, add_reward_weights_arg, float_arg,
                                       passes_arg, positive_int, seed_list)

    add_model_args(p)
    p.add_argument("--reward", default=None, help="reward of every method (default: the generator's)")
    add_reward_weights_arg(p)
    p.add_argument("--seeds", type=seed_list, default="0,1,2,3,4,5,6,7",
                   help="seeds per held-out prompt (default 0-7: the 960 images the main job reports on the world)")
    p.add_argument("--steps", type=positive_int, default=None, help="training steps of HyperNoise and fine-tuning (default: the generator's)")
    p.add_argument("--alpha", type=float_arg(what="positive"), default=None, help="temperature of HyperNoise training (default: the generator's)")
    p.add_argument("--init-trials", type=positive_int, default=None,
                   help="initialisation trials of both trained methods (default: the generator's)")
    p.add_argument("--trial-steps", type=positive_int, default=None, help="optimizer steps of each trial (default: the generator's)")
    p.add_argument("--hypernoise-adapter", default=None, help="reuse this HyperNoise adapter instead of training one")
    p.add_argument("--finetune-adapter", default=None, help="reuse this fine-tuning adapter instead of training one")
    p.add_argument("--hypernet-passes", type=passes_arg, default=None, metavar="K",
                   help="apply HyperNoise's map x <- x + f_phi(x, c) K times at evaluation (default: the adapter's, 1); "
                        f"each pass is one more forward (1 to {MAX_PASSES})")
    p.add_argument("--curve-points", type=positive_int, default=5, help="checkpoints traced along training for the reward/fidelity curve")
    p.add_argument("--iters", type=positive_int, default=50, help="ReNO iterations")
    p.add_argument("--optimize-steps", type=positive_int, default=None, metavar="K",
                   help="generator steps ReNO optimises the noise through before rendering the best at the "
                        "generator's steps (default: 1 for flux-schnell, else the generator's steps)")
    p.add_argument("--n", type=positive_int, default=50, help="N of best-of-N")
    p.add_argument("--no-frontier", action="store_true",
                   help="skip the frontier (best-of-N and ReNO at nested budgets, HyperNoise at 1-3 passes, "
                        "HyperNoise-initialised ReNO) and frontier.png")
    p.add_argument("--no-finetune", action="store_true",
                   help="skip direct fine-tuning (not on the frontier; its training is about a quarter of the bench)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--benchmark", choices=["geneval"], default=None,
                   help="geneval: evaluate every method on GenEval's 553 prompts (or --prompts in its format), scored "
                        "by GenEval (--detector, --clip; docs/geneval.md): the quality column is GenEval's overall")
    p.add_argument("--prompts", default=None,
                   help="held-out prompts every method is evaluated on (default: the generator's test prompts; with "
                        "--benchmark geneval, GenEval's)")
    p.add_argument("--train-prompts", default=None,
                   help="prompts HyperNoise and fine-tuning train on (default: the generator's train prompts)")
    add_geneval_args(p)
    add_output_args(p)
    p.set_defaults(geneval_dtype=None)  # GenEval's detector in float32 whatever --dtype the generator has


def run(args) -> int:
    from hypernoise.bench import BenchConfig, run_bench
    from hypernoise.cli.common import configure_threads, hypernet_passes, model_config, reward_weights
    from hypernoise.cli.evaluate import _seeds
    from hypernoise.io import output_folder, read_prompts
    from hypernoise.presets import default_config

    configure_threads(args)
    passes = hypernet_passes(args)
    records, judge = _held_out(args)  # bad GenEval settings: one line, before the generator loads
    model = model_config(args)
    generator = model.build()
    if records:
        generator.check_prompts([r["prompt"] for r in records])
    train = default_config(generator, model=model, reward=args.reward, reward_weights=reward_weights(args),
                           steps=args.steps, alpha=args.alpha, init_trials=args.init_trials,
                           trial_steps=args.trial_steps,
                           progress=False if args.no_progress else None)
    cfg = BenchConfig(model=model, seeds=_seeds(args.seeds), reward=args.reward, train=train,
                      prompts=[r["prompt"] for r in records] if records else None, records=records, judge=judge,
                      train_prompts=read_prompts(args.train_prompts) if args.train_prompts else None,
                      hypernoise_adapter=args.hypernoise_adapter, finetune_adapter=args.finetune_adapter,
                      passes=passes,
                      curve_points=args.curve_points, reno_iters=args.iters,
                      reno_optimize_steps=args.optimize_steps, n=args.n, frontier=not args.no_frontier,
                      finetune=not args.no_finetune,
                      progress=not args.no_progress)
    inputs = {"hypernoise_adapter": args.hypernoise_adapter, "finetune_adapter": args.finetune_adapter,
              "pretrained": args.pretrained, "prompts": args.prompts, "train_prompts": args.train_prompts,
              "detector": args.detector if args.benchmark else None, "reward_weights": [w.partition("=")[2] for w in args.reward_weights or []]}
    with output_folder(args.out, overwrite=args.overwrite, inputs=inputs, command="hypernoise bench",
                       distributed=True) as out:
        bench = run_bench(cfg, out, generator=generator)
        print((out / "bench.md").read_text())
        if judge is not None:
            _geneval_pictures(out, [m for m in bench["methods"] if (out / m / judge.records_file).is_file()],
                              judge.records_file)
        frontier = "" if args.no_frontier else f", {out}/frontier.png"
        print(f"wrote {out}/bench.json, {out}/bench.md, {out}/curve.png, {out}/tradeoff.png{frontier}")
        return 0


def _geneval_pictures(out, methods: list, records_file: str) -> None:
    """What GenEval saw of each method (its folder's report/) and the methods side by side."""
    from hypernoise.cli.geneval import write_geneval_report
    from hypernoise.geneval.report import write_comparison
    from hypernoise.geneval.scoring import read_records

    for method in methods:
        write_geneval_report(out / method / records_file, out / method)
    path = write_comparison({m: read_records(out / m / records_file) for m in methods}, out / "geneval_compare.png")
    if path is not None:
        print(f"the methods side by side on GenEval's images: {path} (the images a method fixes first)")


def _held_out(args):
    """(prompt rows, judge): with --benchmark geneval, GenEval's rows (or --prompts') and its judge;
    else --prompts' rows (or None: the generator's test prompts) and the generator's own judge."""
    from hypernoise.cli.evaluate import _check_geneval_args, _geneval_judge, _prompt_records

    records = _prompt_records(args)
    if args.benchmark != "geneval":
        return records, None
    _check_geneval_args(args, records)
    return records, _geneval_judge(args, records)
