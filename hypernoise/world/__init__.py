"""The shapes world: a built-in text-to-image world with exact labels (torch only).

A built-in plugin (``hypernoise.registry.BUILTIN_PLUGINS``): importing the package registers the
"shapes" generator in GENERATORS, the "shapes" reward in REWARDS and its training preset in
``hypernoise.presets.PRESETS``.

    grammar    prompts of six GenEval categories, and their train/test split
    render     procedural 32x32 scenes with exact labels
    rules      GenEval's scoring rules on object lists
    models     the networks (generator UNet + text encoder, evaluator, reward)
    weights    where the shipped weights live (assets/world) and how they are loaded
    generator  the "shapes" generator (registered in GENERATORS)
    reward     the "shapes" reward (registered in REWARDS)
    presets    the "shapes" training preset (registered in presets.PRESETS)
    evaluator  world GenEval: evaluate_images, geneval_summary, fidelity
    train      reproducible CPU recipes that produced the shipped weights

Imports go one way, leaves first: grammar, weights (no world imports); rules, models (grammar);
render (grammar, rules); sampling (models); evaluator (render, models, weights, hypernoise.metrics);
generator (evaluator, sampling); reward (render, models, weights); train (all of them).
"""

from hypernoise.world import generator, presets, reward  # noqa: F401  (register "shapes": generator, reward, preset)
from hypernoise.world.grammar import CATEGORIES, benchmark_prompts, parse_prompt, split_prompts

__all__ = ["CATEGORIES", "benchmark_prompts", "parse_prompt", "split_prompts"]
