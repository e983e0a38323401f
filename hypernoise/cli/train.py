"""``hypernoise train``: train a noise hypernetwork for a frozen generator."""

from __future__ import annotations

#: seeds per test prompt of the main job's before/after: 120 balanced test entries x 8 = 960 images,
#: a standard error near 0.015 on the overall score (2 seeds, 240 images: near 0.03)
EVAL_SEEDS = 8


def add_arguments(p) -> None:
    from hypernoise.cli.common import (add_model_args, add_output_args, add_passes_arg, add_reward_weights_arg,
                                       add_train_args, float_arg, int_arg, non_negative_float, non_negative_int,
                                       positive_float, positive_int)
    from hypernoise.methods import TRAINING

    temperature = float_arg(what="positive")  # a temperature: finite and > 0
    add_model_args(p)
    p.add_argument("--reward", default=None, help="reward spec name:weight[,...] or preset (default: the generator's)")
    add_reward_weights_arg(p)
    p.add_argument("--method", choices=list(TRAINING), default="hypernoise",
                   help="hypernoise (a noise hypernetwork) or finetune (direct LoRA reward fine-tuning of g, no KL)")
    p.add_argument("--preset", default=None, metavar="NAME",
                   help="training preset of the generator: default (this library's choice) or paper (sana-sprint, "
                        "flux-schnell, sd-turbo: the authors' runs, docs/training.md); flags given override it")
    p.add_argument("--prompts", default=None, metavar="SOURCES",
                   help="prompts: a text, JSONL or JSON file, a folder of *_train.txt, or hf:NAME[:SPLIT][:COLUMN]; "
                        "several joined by commas, each weighted with *N (default: the generator's training prompts, "
                        "else 60 bundled everyday prompts); the authors' mix: hypernoise prompt-mix")
    p.add_argument("--prompt-duplicates", choices=["drop", "keep"], default="drop",
                   help="a prompt listed twice: drop the repeats (default) or keep them, as the authors' mix does")
    p.add_argument("--lora-dtype", choices=["float32", "bfloat16"], default=None,
                   help="dtype of the trainable LoRA weights: float32 (default; small updates count) or bfloat16 "
                        "with no fp32 copy, as the authors' runs (docs/training.md)")
    p.add_argument("--objective", choices=["l2", "reference", "exact"], default=None, help="noise-space objective (default l2, the paper's)")
    p.add_argument("--alpha", type=temperature, default=None, help="temperature alpha of the l2/exact objective (default 1)")
    p.add_argument("--alpha-start", type=temperature, default=None,
                   help="alpha before --alpha-ramp (a low temperature first lets the reward find a direction)")
    p.add_argument("--alpha-ramp", type=non_negative_int, nargs=2, default=None, metavar=("BEGIN", "END"),
                   help="optimizer steps over which alpha moves geometrically from --alpha-start to --alpha")
    p.add_argument("--reg-weight", type=non_negative_float, default=None, help="reg_weight of the reference objective (default 0.5)")
    p.add_argument("--rank", type=positive_int, default=None, help="LoRA rank (default 16, or the generator's)")
    p.add_argument("--lora-alpha", type=positive_float, default=None,
                   help="LoRA alpha (default: the preset's alpha, scaled with --rank to keep its alpha / rank: "
                        "2 x rank for sana-sprint and the built-in world, 1 x rank for sd-turbo, 5 x for flux-schnell)")
    add_passes_arg(p, training=True)
    p.add_argument("--eval-seeds", type=int_arg(1, what="at least 1"), default=EVAL_SEEDS, metavar="N",
                   help=f"noise seeds 0..N-1 per test prompt in the closing before/after evaluation, where the "
                        f"generator's world has a judge (default {EVAL_SEEDS})")
    add_train_args(p)
    h = p.add_argument_group("the Hugging Face Hub")
    h.add_argument("--push-to-hub", action="store_true",
                   help="upload OUT/adapter with its model card when training ends (checked before training: a token, "
                        "HF_HUB_OFFLINE unset)")
    h.add_argument("--hub-model-id", default=None, metavar="NAME",
                   help="the model repo, NAME or OWNER/NAME (default: the --out folder's name)")
    h.add_argument("--hub-private", action="store_true", help="create the repo private")
    add_output_args(p, required=False)


def _configs(args, generator, model, validation_prompts=None):
    from hypernoise.cli.common import hypernet_passes, reward_weights, train_settings
    from hypernoise.presets import default_config

    return default_config(generator, model=model, reward=args.reward, reward_weights=reward_weights(args),
                          preset=args.preset,
                          objective=args.objective, alpha=args.alpha, reg_weight=args.reg_weight,
                          alpha_start=args.alpha_start, alpha_ramp=args.alpha_ramp, rank=args.rank,
                          lora_alpha=args.lora_alpha, lora_dtype=args.lora_dtype, passes=hypernet_passes(args),
                          validation_prompts=tuple(validation_prompts) if validation_prompts else None,
                          **train_settings(args))


def run(args) -> int:
    from hypernoise.cli.common import configure_threads, model_config
    from hypernoise.presets import preset_model
    from hypernoise.errors import ConfigError, Interrupted
    from hypernoise.io import output_folder
    from hypernoise.training.trainer import RUN_OUTPUTS
    from hypernoise.prompts import load_prompts, source_paths
    from hypernoise.methods import train
    from hypernoise.rewards import parse_spec
    from hypernoise.tracking import check_report_to

    configure_threads(args)
    if (args.hub_model_id or args.hub_private) and not args.push_to_hub:
        raise ConfigError("--hub-model-id and --hub-private apply with --push-to-hub; add it, or push later with "
                          "hypernoise push-to-hub RUN/adapter NAME")
    if args.push_to_hub:
        from hypernoise.publish import check_can_push

        from pathlib import Path

        repo_id = args.hub_model_id or (Path(args.out).resolve().name if args.out else None)
        check_can_push(repo_id=repo_id)  # a repo id the Hub refuses, offline, no token: said now, not after the run
    check_report_to(args.report_to)  # a tracker that is not installed would log nothing: said now
    if args.method == "finetune" and args.hypernet_passes is not None:
        raise ConfigError("--hypernet-passes applies to --method hypernoise; drop it for finetune")
    if args.eval_seeds < 1:
        raise ConfigError(f"--eval-seeds must be at least 1, got {args.eval_seeds}")
    if args.reward is not None:
        parse_spec(args.reward)  # fail on a bad spec before loading any model
    if not args.validation_prompts and (args.validation_every is not None or args.validation_seeds is not None):
        given = "`validation_every`" if args.validation_every is not None else "`validation_seeds`"
        raise ConfigError(f"{given} needs `validation_prompts` (a file of held-out prompts)", field="validation_prompts")
    prompts = load_prompts(args.prompts, keep_duplicates=args.prompt_duplicates == "keep") if args.prompts else None
    validation = load_prompts(args.validation_prompts) if args.validation_prompts else None
    model = preset_model(model_config(args), args.preset)  # a preset may name the weights and the resolution
    generator = model.build()
    cfg = _configs(args, generator, model, validation)
    print(f"preset: {generator.name}/{args.preset or 'default'}", flush=True)
    _note_processes(generator.name, args.preset, cfg.train)
    prompts = prompts or generator.default_prompts("train") or _bundled(generator)
    generator.check_prompts(prompts)
    if validation:
        generator.check_prompts(validation)
        _warn_overlap(validation, prompts, generator)
    inputs = {"prompts": source_paths(args.prompts) if args.prompts else None, "pretrained": model.pretrained,
              "validation_prompts": source_paths(args.validation_prompts) if args.validation_prompts else None,
              "resume": args.resume if args.resume != "latest" else None,
              "reward_weights": [w.partition("=")[2] for w in args.reward_weights or []]}
    with output_folder(args.out or f"runs/{generator.name}-{args.method}", overwrite=args.overwrite,
                       resume=bool(args.resume), inputs=inputs, command="hypernoise train", writes=RUN_OUTPUTS,
                       distributed=True) as out:
        task, result = train(cfg, prompts, out, resume=args.resume, method=args.method, generator=generator)
        if not result.is_main:  # the main process reports
            return 130 if result.interrupted else 0
        if result.interrupted:  # like every command stopped by a signal: what was kept and how to go on, 130
            raise Interrupted(f"interrupted at step {result.step}: checkpoint written; continue with --resume latest "
                              f"--out {out}")
        _report_trials(out)
        _report_validation(out)
        m = result.last_metrics
        print(f"trained {result.step} steps ({result.skipped_steps} skipped) in {result.seconds:.1f} s; "
              f"reward {m.get('reward', float('nan')):.4g}, kl {m.get('kl', float('nan')):.4g}")
        _report(task, args, out, validation or prompts)
        print(f"adapter: {out}/adapter   metrics: {out}/metrics.jsonl")
        _publish(args, out)
        return 0


def _publish(args, out) -> None:
    """The model card with what the run measured (before/after, samples) and, with --push-to-hub,
    the upload."""
    from hypernoise.card import write_model_card

    repo_id = (args.hub_model_id or out.resolve().name) if args.push_to_hub else None
    card = write_model_card(out / "adapter", repo_id)
    if card is not None:
        print(f"model card: {card}")
    if args.push_to_hub:
        from hypernoise.publish import push_to_hub

        url = push_to_hub(out / "adapter", repo_id, private=args.hub_private)
        print(f"pushed {out}/adapter to {url}")


def _note_processes(name: str, preset, train) -> None:
    """One line (main process) when a paper preset runs on another process count than the authors'."""
    import os

    from hypernoise.devices import check_launch_env
    from hypernoise.presets import paper_processes_note

    note = paper_processes_note(name, preset, train, check_launch_env(), option="--reference-processes")
    if note and os.environ.get("RANK", "0") == "0":
        print(note, flush=True)


def _bundled(generator) -> list:
    """The bundled everyday prompts, for a generator with no prompts of its own; said on stderr."""
    import sys

    from hypernoise.prompts import BUNDLED, bundled_prompts

    prompts = bundled_prompts()
    print(f"no --prompts: training {generator.name} on the {len(prompts)} bundled everyday prompts ({BUNDLED.name}), "
          f"a smoke test; pass --prompts for a real run", file=sys.stderr, flush=True)
    return prompts


def _warn_overlap(validation, prompts, generator) -> None:
    """One line on stderr each when validation prompts are also training prompts (validation then
    measures fit) or the world's test prompts (choosing best/ on them leaks the test set)."""
    import sys

    test = generator.default_prompts("test") or []
    for other, what, why in ((prompts, "training prompts", "validation then measures fit, not generalisation"),
                             (test, f"test prompts of {generator.name}", "choosing best/ on them leaks the test set")):
        others = set(other)
        shared = [p for p in validation if p in others]
        if shared:
            print(f"warning: {len(shared)} of the {len(validation)} validation prompts are also {what} (e.g. "
                  f"{shared[0]!r}): {why}; hold out other prompts", file=sys.stderr, flush=True)


def _report_validation(out) -> None:
    """One line on the best validation, when this run validated."""
    import json

    from hypernoise.training.validation import BEST_DIR, BEST_RECORD

    path = out / BEST_DIR / BEST_RECORD
    if path.is_file():
        record = json.loads(path.read_text())
        base = record["metrics"].get("base/reward")
        print(f"validation: best at step {record['step']}, reward {record['reward']:.4g}"
              + (f" (base {base:.4g})" if base is not None else "") + f"; its adapter: {out / BEST_DIR}")


def _report_trials(out) -> None:
    """One line on the initialisation trials, when this run made them."""
    import json

    from hypernoise.training.trainer import TRIALS_FILE

    path = out / TRIALS_FILE
    if path.is_file():
        record = json.loads(path.read_text())
        scores = ", ".join(f"{t['score']:.4g}" for t in record["trials"])
        print(f"init trials ({record['trial_steps']} steps each, mean loss of the second half): {scores}; "
              f"kept trial {record['kept']} (init seed {record['trials'][record['kept']]['init_seed']})")


def _report(task, args, out, prompts) -> None:
    """Sample grid of every image generator (the world's test prompts, else the run's held-out or
    training prompts: every model card shows one), and world GenEval on the test prompts before and
    after, where there is a judge."""
    import json

    from hypernoise.evaluation import before_after
    from hypernoise.methods.generate import write_samples

    gen, hyper = task.generator, task.adapter
    test_prompts = gen.default_prompts("test") or gen.default_prompts("train") or []
    shown = test_prompts or list(dict.fromkeys(prompts))[:4]
    grid = write_samples(gen, hyper, shown, out, seed=args.seed) if shown and shown != [""] else None
    if grid is not None:
        print(f"samples: {grid} (top: base, bottom: trained, same noise)")
    if args.method != "hypernoise":
        return
    scores = before_after(gen, hyper, test_prompts, seeds=range(args.eval_seeds)) if test_prompts else None
    if scores is None:
        return
    (out / "before_after.json").write_text(json.dumps(scores, indent=1) + "\n")
    print(format_before_after(scores))


def format_before_after(scores: dict) -> str:
    base, hn = scores["base"]["geneval"], scores["hypernoise"]["geneval"]
    rows = [f"{'test prompts':<14} {'base':>7} {'HyperNoise':>11}"]
    rows += [f"{k:<14} {base[k]:>7.3f} {hn[k]:>11.3f}" for k in base if base[k] is not None]
    fb, fh = scores["base"].get("fidelity"), scores["hypernoise"].get("fidelity")
    if fb is not None and fh is not None:
        rows.append(f"{'fidelity dist.':<14} {fb:>7.3f} {fh:>11.3f}   (lower is closer to real images)")
    nb, nh = scores["base"]["cost"]["nfe_per_image"], scores["hypernoise"]["cost"]["nfe_per_image"]
    rows.append(f"{'NFE / image':<14} {nb:>7g} {nh:>11g}")
    return "\n".join(rows)
