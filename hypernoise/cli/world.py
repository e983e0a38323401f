"""``hypernoise world``: retrain the built-in world's networks from scratch (reproducible, CPU).

    hypernoise world train-generator --out DIR    flow base + reflow student (about an hour)
    hypernoise world train-evaluator --out DIR    world GenEval's segmentation networks (seeds 0 and 1)
    hypernoise world train-reward    --out DIR    the "shapes" reward

Use the result with ``--pretrained DIR`` (generator) or ``--reward-weights shapes=DIR``.
"""

from __future__ import annotations

#: sub-command -> (training function, recipe class) in hypernoise.world.train
TARGETS = {
    "train-generator": ("train_generator", "GeneratorRecipe", "the generator: rectified-flow base, then one reflow pass"),
    "train-evaluator": ("train_evaluator", "EvaluatorRecipe", "world GenEval's segmentation networks (two, from seeds SEED and SEED+1)"),
    "train-reward": ("train_reward", "RewardRecipe", "the image-text reward 'shapes'"),
}


def add_arguments(p) -> None:
    from hypernoise.cli.common import seed_arg
    from hypernoise.cli.main import OneLineParser

    sub = p.add_subparsers(dest="world_command", metavar="TARGET", parser_class=OneLineParser, required=True)
    for name, (_, _, help_text) in TARGETS.items():
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        cmd.add_argument("--out", required=True, help="folder for <name>.safetensors + <name>.json")
        cmd.add_argument("--overwrite", action="store_true", help="replace the contents of an existing --out folder")
        cmd.add_argument("--seed", type=seed_arg, default=0, help="seed of data and initialisation")
        cmd.set_defaults(_parser=cmd)  # errors name this target's flags


def run(args) -> int:
    import dataclasses

    import torch

    from hypernoise.io import output_folder
    from hypernoise.world import train

    fn_name, recipe_name, _ = TARGETS[args.world_command]
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    recipe = dataclasses.replace(getattr(train, recipe_name)(), seed=args.seed)
    with output_folder(args.out, overwrite=args.overwrite, command=f"hypernoise world {args.world_command}") as out:
        path = getattr(train, fn_name)(out, recipe, log=lambda line: print(line, flush=True))
        print(f"wrote {path}")
        return 0
