"""The shapes world's measured numbers (docs/world.md, "Measured numbers"), reproduced.

    python benchmarks/world_numbers.py [--second-evaluator DIR/evaluator.safetensors] [--out results/world_numbers.json]

Rows: the evaluator on ground-truth scenes (test prompts and random grammar prompts, 1200 each);
the shipped generator at 1, 2 and 4 steps on the 480 test images (``benchmark_prompts(20)`` x 4
noises, seed 1000) with fidelity; best-of-8 by the ``shapes`` reward (noise seeds 2000-2007).
With ``--second-evaluator`` (for example ``hypernoise world train-evaluator --seed 2 --out DIR``),
also the share of generated samples on which the two evaluators agree. With ``--adapter DIR``
(a HyperNoise adapter of the shapes generator), also HyperNoise rows on the same noises (the
sweep in docs/world.md). The generator and HyperNoise rows also give the share of each colour
among the objects detected on prompts that name none (where HyperNoise's drift shows). About 2
minutes on one core.
"""

from __future__ import annotations

import argparse
import contextlib

import torch

from hypernoise.adapter import load_adapter
from hypernoise.generators import build_generator
from hypernoise.io import write_json
from hypernoise.rewards import build_reward
from hypernoise.world.evaluator import WorldEvaluator, default_evaluator, geneval_summary
from hypernoise.world.grammar import CATEGORIES, benchmark_prompts, category_of
from hypernoise.world.render import make_dataset
from world_fidelity_probe import colour_shares

COLOURLESS = ("single_object", "two_object", "counting", "position")


def colourless_shares(records: list[dict]) -> dict[str, float]:
    """Share of each colour among the objects detected on prompts that name no colour."""
    return colour_shares([r for r in records if category_of(r["prompt"]) in COLOURLESS])


def agreement(a: list[dict], b: list[dict]) -> float:
    """Share of samples on which two evaluators' per-sample verdicts are equal."""
    return sum(x["correct"] == y["correct"] for x, y in zip(a, b)) / len(a)


def best_of(images: list[torch.Tensor], scores: torch.Tensor) -> torch.Tensor:
    """Per sample, the image of the highest score: images K x [B, ...], scores [K, B] -> [B, ...]."""
    best = scores.argmax(0)
    return torch.stack([images[int(k)][i] for i, k in enumerate(best)])


def measure(second: WorldEvaluator | None, adapter: str | None = None) -> list[dict]:
    ev, gen, reward = default_evaluator(), build_generator("shapes").freeze(), build_reward("shapes")
    hypernet = load_adapter(gen, adapter) if adapter else None
    rows = []
    for name, data in (("ground truth, test prompts", make_dataset(1200, seed=999, prompts=benchmark_prompts(200))),
                       ("ground truth, random prompts", make_dataset(1200, seed=998))):
        rows.append({"row": name, **geneval_summary(ev.evaluate_images(data.images, data.prompts))})
    prompts = benchmark_prompts(20) * 4
    noise, reference = gen.sample_noise(len(prompts), seed=1000), make_dataset(len(prompts), 12345, prompts).images
    with torch.no_grad():
        cond = gen.encode(prompts)
        delta = hypernet(noise, cond) if hypernet is not None else None  # f(x0, c), adapters on
        with hypernet.adapters_disabled() if hypernet is not None else contextlib.nullcontext():  # g itself
            rows += generator_rows(gen, ev, second, reward, prompts, noise, cond, reference, delta)
    return rows


def generator_rows(gen, ev, second, reward, prompts, noise, cond, reference, delta) -> list[dict]:
    """Base (and, with ``delta``, HyperNoise) rows at 1, 2 and 4 steps; best-of-8 at 1 and 2."""
    rows = []
    for steps in (1, 2, 4):
        images = gen.generate(noise, cond, steps)
        records = ev.evaluate_images(images, prompts)
        row = {"row": f"generator, {steps} step{'s' * (steps > 1)}", **geneval_summary(records),
               "fidelity": ev.fidelity(images, reference), "colours": colourless_shares(records)}
        if second is not None:
            row["agreement"] = agreement(records, second.evaluate_images(images, prompts))
        rows.append(row)
        if delta is not None:
            modulated = gen.generate(noise + delta, cond, steps)
            records = ev.evaluate_images(modulated, prompts)
            rows.append({"row": f"HyperNoise, {steps} step{'s' * (steps > 1)}", **geneval_summary(records),
                         "fidelity": ev.fidelity(modulated, reference), "colours": colourless_shares(records)})
    for steps in (1, 2):
        draws = [gen.generate(gen.sample_noise(len(prompts), seed=2000 + k), cond, steps) for k in range(8)]
        chosen = best_of(draws, torch.stack([reward(d, prompts) for d in draws]))
        rows.append({"row": f"best-of-8 by reward, {steps} step{'s' * (steps > 1)}",
                     **geneval_summary(ev.evaluate_images(chosen, prompts))})
    return rows


def table(rows: list[dict]) -> str:
    cols = ["overall", *CATEGORIES, "fidelity", "agreement"]
    cols = [c for c in cols if any(c in r for r in rows)]
    lines = ["| | " + " | ".join(cols) + " |", "| --- " * (len(cols) + 1) + "|"]
    for r in rows:
        cells = [f"{r[c]:.3f}" if isinstance(r.get(c), float) else "-" for c in cols]
        lines.append(f"| {r['row']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--second-evaluator", default=None, help="an evaluator trained from other seeds (agreement)")
    ap.add_argument("--adapter", default=None, help="also score this HyperNoise adapter on the same noises")
    ap.add_argument("--out", default="benchmarks/results/world_numbers.json", help="JSON file to write")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    second = WorldEvaluator.from_pretrained(args.second_evaluator) if args.second_evaluator else None
    rows = measure(second, args.adapter)
    print(table(rows))
    for r in rows:
        if "colours" in r:
            print(f"{r['row']}: colours of objects on colourless prompts {r['colours']}")
    write_json(args.out, rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
