"""How the shapes world's reward maps to the evaluator's verdict, for base and HyperNoise images.

    python benchmarks/world_reward_calibration.py --adapter DIR/adapter [--passes 1,2] [--reno]
        [--out benchmarks/results/world_reward_calibration.json]

The 960 test images (``benchmark_prompts(20)`` x 8, noise seed 1000) of the base generator and of
the adapter at each number of passes, at the default 2 generator steps. Every image gets its
``shapes`` reward and the evaluator's verdict; images are binned by reward and each bin reports
its size and the share the evaluator finds correct. A method whose reward gain lands in bins
where few images are correct gains little GenEval for it. ``--reno`` adds ReNO (50 iterations)
from the same noises. About a minute on 2 cores, 6 with ``--reno``.
docs/world.md ("Where the reward's gain goes") reports a run.
"""

from __future__ import annotations

import argparse

import torch

from hypernoise.adapter import load_adapter
from hypernoise.generators import build_generator
from hypernoise.io import write_json
from hypernoise.methods import sample
from hypernoise.methods.reno import reno
from hypernoise.rewards import build_reward
from hypernoise.world.evaluator import default_evaluator, geneval_summary
from hypernoise.world.grammar import benchmark_prompts

#: reward bin edges; the world's reward lies in about [-18, 0]
EDGES = (-float("inf"), -3.0, -1.5, -0.5, -0.2, -0.05, float("inf"))


def calibration(rewards: torch.Tensor, correct: torch.Tensor) -> list[dict]:
    """Per reward bin: edges, image count and the evaluator's accuracy (None for an empty bin)."""
    rows = []
    for lo, hi in zip(EDGES, EDGES[1:]):
        inside = (rewards >= lo) & (rewards < hi)
        n = int(inside.sum())
        rows.append({"from": lo, "to": hi, "n": n, "accuracy": float(correct[inside].mean()) if n else None})
    return rows


@torch.no_grad()
def score(gen, reward, evaluator, hyper, noise: torch.Tensor, prompts: list[str], passes: int) -> dict:
    """Reward, verdict and calibration of the images from ``noise``, modulated by ``passes`` passes
    of ``hyper`` (0: the base generator's images)."""
    images = []
    for s in range(0, len(prompts), 120):
        cond = gen.encode(prompts[s:s + 120])
        if passes:
            images.append(sample(gen, hyper, noise[s:s + 120], cond, passes=passes).images)
        else:
            with hyper.adapters_disabled():  # g itself: the LoRA hypernetwork lives in g's backbone
                images.append(sample(gen, None, noise[s:s + 120], cond).images)
    images = torch.cat(images)
    r = reward(images, prompts).float()
    records = evaluator.evaluate_images(images, prompts)
    correct = torch.tensor([float(rec["correct"]) for rec in records])
    return {"reward": float(r.mean()), "overall": geneval_summary(records)["overall"],
            "share_above_-0.05": float((r >= -0.05).float().mean()), "bins": calibration(r, correct)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", required=True, help="a HyperNoise adapter folder of the shapes world")
    ap.add_argument("--passes", default="1,2", help="comma-separated numbers of passes to score the adapter at")
    ap.add_argument("--reno", action="store_true", help="also ReNO's images (50 iterations) from the same noises")
    ap.add_argument("--out", default="benchmarks/results/world_reward_calibration.json", help="JSON file to write")
    args = ap.parse_args()
    torch.set_flush_denormal(True)
    gen = build_generator("shapes").freeze()
    hyper = load_adapter(gen, args.adapter)
    reward, evaluator = build_reward("shapes"), default_evaluator()
    prompts = benchmark_prompts(20) * 8
    noise = gen.sample_noise(len(prompts), seed=1000)
    rows = {"base": score(gen, reward, evaluator, hyper, noise, prompts, 0)}
    for k in (int(p) for p in args.passes.split(",")):
        rows[f"hypernoise, {k} pass{'es' if k > 1 else ''}"] = score(gen, reward, evaluator, hyper, noise, prompts, k)
    if args.reno:
        with hyper.adapters_disabled():
            found = torch.cat([reno(gen, reward, noise[s:s + 120], prompts[s:s + 120]).noise for s in range(0, len(prompts), 120)])
        rows["ReNO, 50 iterations"] = score(gen, reward, evaluator, hyper, found, prompts, 0)
    bins = [f"[{lo:g}, {hi:g})" for lo, hi in zip(EDGES, EDGES[1:])]
    print("| images | reward | overall | reward >= -0.05 | " + " | ".join(bins) + " |")
    print("|---" * (4 + len(bins)) + "|")
    for name, row in rows.items():
        cells = [f"{b['n']}: {b['accuracy']:.2f}" if b["n"] else "0" for b in row["bins"]]
        print(f"| {name} | {row['reward']:.2f} | {row['overall']:.3f} | {row['share_above_-0.05']:.2f} | "
              + " | ".join(cells) + " |")
    write_json(args.out, {"adapter": args.adapter, "images": len(prompts), "noise_seed": 1000, "methods": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
