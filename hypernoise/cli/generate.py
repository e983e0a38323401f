"""``hypernoise generate``: images from prompts, with or without a noise hypernetwork."""

from __future__ import annotations

import re

#: seconds before the progress bar appears: a run that fails (or finishes) at once draws none, and its
#: error stays the one line on stderr
PROGRESS_DELAY_S = 1.0


def add_arguments(p) -> None:
    from hypernoise.cli.common import add_model_args, add_output_args, add_passes_arg, positive_int, seed_arg

    add_model_args(p)
    p.add_argument("--adapter", default=None,
                   help="adapter folder written by `hypernoise train` (or the paper's peft folder), or a Hub id "
                        "OWNER/NAME[@REVISION][/SUBFOLDER]")
    p.add_argument("--prompt", action="append", default=None, help="a prompt (repeatable)")
    p.add_argument("--prompts", default=None, help="prompt file: one prompt per line, JSONL, or a JSON list or object")
    p.add_argument("--seed", type=seed_arg, default=0, help="seed of the first image of each prompt")
    p.add_argument("--num-images", type=positive_int, default=1, help="images per prompt (seeds seed, seed+1, ...)")
    p.add_argument("--num-steps", type=positive_int, default=None, help="generator steps (default: the generator's)")
    p.add_argument("--batch-size", type=positive_int, default=4, help="images per batch")
    add_passes_arg(p)
    p.add_argument("--merged", action="store_true",
                   help="with a LoRA adapter: keep a merged copy of its layers while generating, so that the "
                        "hypernetwork pass costs one plain backbone forward (memory: about one more backbone)")
    p.add_argument("--compare", action="store_true", help="also write base images from the same noise and a side-by-side grid")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_output_args(p)


def _slug(text: str, n: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:n] or "prompt"


def _positive(name: str, value) -> None:
    from hypernoise.errors import ConfigError

    if value is not None and value < 1:
        raise ConfigError(f"--{name} must be a positive integer, got {value}")


def run(args) -> int:
    import sys

    from tqdm.auto import tqdm

    from hypernoise.adapter import load_adapter
    from hypernoise.cli.common import adapter_size_defaults, configure_threads, hypernet_passes, model_config
    from hypernoise.errors import ConfigError
    from hypernoise.io import find_prompts, output_folder
    from hypernoise.methods.generate import OUTPUTS, compare_grid, generate_images, save_png

    configure_threads(args)
    for name in ("num_images", "num_steps", "batch_size"):
        _positive(name.replace("_", "-"), getattr(args, name))
    prompts = find_prompts(args.prompt, args.prompts)
    if not prompts:
        raise ConfigError("no prompt given; pass --prompt TEXT (repeatable) or --prompts FILE")
    passes = hypernet_passes(args)
    if passes and not args.adapter:
        raise ConfigError("--hypernet-passes needs --adapter DIR (it sets how the hypernetwork is applied)")
    if args.merged and not args.adapter:
        raise ConfigError("--merged needs --adapter DIR (it merges the adapter's LoRA for generation)")
    if args.compare and not args.adapter:
        raise ConfigError("--compare needs --adapter DIR (it compares base and HyperNoise images)")
    adapter_size_defaults(args)  # an adapter trained at another size: its size, not a refusal
    generator = model_config(args).build()
    hypernet = load_adapter(generator, args.adapter) if args.adapter else None
    generator.check_prompts(prompts)
    inputs = {"prompts": args.prompts, "adapter": args.adapter, "pretrained": args.pretrained}
    with output_folder(args.out, overwrite=args.overwrite, inputs=inputs, command="hypernoise generate",
                       writes=OUTPUTS) as out:
        seeds = list(range(args.seed, args.seed + args.num_images))
        meta = {"generator": generator.name, "num_steps": args.num_steps or generator.default_steps,
                "adapter": args.adapter, **({"passes": passes or hypernet.passes} if hypernet is not None else {})}
        names = [f"{i:03d}-{_slug(p)}-seed{s}.png" for i, p in enumerate(prompts) for s in seeds]
        pairs = [(p, s) for p in prompts for s in seeds]
        sub, method = ("hypernoise", "hypernoise") if hypernet is not None else ("", "base")

        bar = tqdm(total=len(pairs) * (2 if args.compare else 1), desc="generate", unit="img",
                   disable=args.no_progress, dynamic_ncols=True, delay=PROGRESS_DELAY_S)

        def save(i, image):  # as each batch is done: an interrupted run keeps what it finished
            save_png(image, out / sub / names[i], pairs[i][0], pairs[i][1], {**meta, "method": method})
            written.append(i)
            bar.update(1)

        written: list = []
        try:
            images = generate_images(generator, prompts, seeds, args.num_steps, hypernet, args.batch_size,
                                     passes=passes, on_image=save, merged=args.merged)
        except KeyboardInterrupt:
            bar.close()
            print(f"interrupted: {len(written)} of {len(pairs)} images written to {out}; run the command again "
                  f"with --overwrite for all of them", file=sys.stderr)
            return 130
        if args.compare:
            base = generate_images(generator, prompts, seeds, args.num_steps, hypernet, args.batch_size, base=True,
                                   on_image=lambda i, image: bar.update(1))
        bar.close()
        if args.compare:
            for image, name, (prompt, seed) in zip(base, names, pairs):
                save_png(image, out / "base" / name, prompt, seed, {**meta, "method": "base"})
            compare_grid(base, images, [p for p, _ in pairs]).save(out / "compare.png")
        print(f"wrote {len(images)} images to {out}" + (f" and {out}/compare.png" if args.compare else ""))
        return 0
