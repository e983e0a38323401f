"""The shapes world: a built-in text-to-image world with exact labels (torch only).

    grammar    prompts of six GenEval categories, and their train/test split
    render     procedural 32x32 scenes with exact labels
    rules      GenEval's scoring rules on object lists
    models     the networks (generator UNet + text encoder, evaluator, reward)
    generator  the "shapes" generator (registered in GENERATORS; weights ship in assets/world)
    reward     the "shapes" reward (registered in REWARDS)
    evaluator  world GenEval: evaluate_images, geneval_summary, fidelity
    train      reproducible CPU recipes that produced the shipped weights
"""

from hypernoise.world.grammar import CATEGORIES, benchmark_prompts, parse_prompt, split_prompts

__all__ = ["CATEGORIES", "benchmark_prompts", "parse_prompt", "split_prompts"]
