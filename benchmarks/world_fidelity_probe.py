"""Why a HyperNoise adapter of the shapes world drifts from the base distribution: four probes.

    python benchmarks/world_fidelity_probe.py --adapter DIR/adapter [--out results/world_fidelity_probe.json]

1. colour preference of the reward: the mean ``shapes`` reward of base images that the evaluator
   finds correct with exactly one object, per colour of that object (colourless single_object
   prompts, 1602 images). Equal means mean no colour is cheaper to be rewarded for.
2. ReNO's colours: the share of each colour among objects detected on colourless single_object
   and two_object prompts, base against ReNO (25 iterations) on the same noises.
3. noise-space stretch of x0 -> x0 + f(x0): |v + J_f v| / |v| for random perturbations v of the
   noise (norm 3, blocky at 1x1 .. 32x32 resolution; finite differences). Below 1 means the map
   contracts (concentrates noises), which the log-det term of the exact KL would charge.
4. the per-prompt mean field m(c) = E_x0 f(x0, c) (32 noises per prompt): its share of f's energy,
   and the 480 test images (``benchmark_prompts(20)`` x 4, noise seed 1000) generated from
   x0 + f, x0 + f - m and x0 + m, with overall and fidelity.

About 80 seconds on one core. docs/world.md ("Why fidelity drifts") reports a run.
"""

from __future__ import annotations

import argparse
import collections

import torch
import torch.nn.functional as F

from hypernoise.adapter import load_adapter
from hypernoise.generators import build_generator
from hypernoise.io import write_json
from hypernoise.methods.reno import RenoConfig, reno
from hypernoise.rewards import build_reward
from hypernoise.world.evaluator import default_evaluator, geneval_summary
from hypernoise.world.grammar import SHAPES, benchmark_prompts, category_of
from hypernoise.world.render import make_dataset


def colour_shares(records: list[dict]) -> dict[str, float]:
    """Share of each colour among the detected objects of evaluator records."""
    counts = collections.Counter(o.split()[0] for r in records for o in r.get("objects", []))
    total = max(1, sum(counts.values()))
    return {c: round(n / total, 3) for c, n in sorted(counts.items())}


def reward_by_colour(gen, reward, ev) -> dict[str, float]:
    prompts = [f"a photo of a {s}" for s in SHAPES] * 534
    with torch.no_grad():
        images = gen.generate(gen.sample_noise(len(prompts), seed=7), gen.encode(prompts))
        scores = reward(images, prompts).tolist()
    by = collections.defaultdict(list)
    for rec, score in zip(ev.evaluate_images(images, prompts), scores):
        if rec["correct"] and len(rec["objects"]) == 1:
            by[rec["objects"][0].split()[0]].append(score)
    return {c: round(sum(v) / len(v), 3) for c, v in sorted(by.items())}


def reno_colours(gen, reward, ev) -> dict[str, dict]:
    prompts = [p for p in benchmark_prompts(20) if category_of(p) in ("single_object", "two_object")] * 2
    noise = gen.sample_noise(len(prompts), seed=1000)
    optimised = reno(gen, reward, noise, prompts, RenoConfig(iters=25)).noise
    out = {}
    with torch.no_grad():
        cond = gen.encode(prompts)
        for name, x in (("base", noise), ("ReNO", optimised)):
            records = ev.evaluate_images(gen.generate(x, cond), prompts)
            out[name] = {"overall": geneval_summary(records)["overall"], "colours": colour_shares(records)}
    return out


def stretch(gen, hyper) -> dict[int, float]:
    prompts = benchmark_prompts(20)
    noise, g = gen.sample_noise(len(prompts), seed=1000), torch.Generator().manual_seed(0)
    out = {}
    with torch.no_grad():
        cond = gen.encode(prompts)
        base = hyper(noise, cond)
        for res in (1, 2, 4, 8, 32):
            v = F.interpolate(torch.randn(len(prompts), 3, res, res, generator=g), size=noise.shape[-2:], mode="nearest")
            v = 3.0 * v / v.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            moved = v + hyper(noise + v, cond) - base
            out[res] = round(float((moved.flatten(1).norm(dim=1) / 3.0).mean()), 3)
    return out


def mean_field(gen, hyper, ev) -> dict:
    entries = benchmark_prompts(20)
    prompts = entries * 4
    noise, reference = gen.sample_noise(len(prompts), seed=1000), make_dataset(len(prompts), 12345, prompts).images
    with torch.no_grad():
        cond = gen.encode(prompts)
        delta = hyper(noise, cond)
        field = torch.stack([hyper(gen.sample_noise(32, seed=77), gen.encode([p] * 32)).mean(0) for p in entries])
        field = field.repeat(4, 1, 1, 1)
        share = float(field.pow(2).mean() / delta.pow(2).mean())
        rows = {}
        with hyper.adapters_disabled():
            for name, x in (("base", noise), ("x0 + f", noise + delta), ("x0 + f - m", noise + delta - field),
                            ("x0 + m", noise + field)):
                images = gen.generate(x, cond)
                rows[name] = {"overall": geneval_summary(ev.evaluate_images(images, prompts))["overall"],
                              "fidelity": ev.fidelity(images, reference)}
    return {"mean_field_share": round(share, 3), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adapter", required=True, help="a HyperNoise adapter of the shapes generator")
    ap.add_argument("--out", default="benchmarks/results/world_fidelity_probe.json", help="JSON file to write")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    gen, reward, ev = build_generator("shapes").freeze(), build_reward("shapes"), default_evaluator()
    result = {"adapter": args.adapter, "reward_by_colour": reward_by_colour(gen, reward, ev),
              "reno_colours": reno_colours(gen, reward, ev)}  # before the LoRA goes into the backbone
    hyper = load_adapter(gen, args.adapter)
    result.update(stretch=stretch(gen, hyper), mean_field=mean_field(gen, hyper, ev))
    print("1. reward of correct one-object base images, by colour:", result["reward_by_colour"])
    for name, row in result["reno_colours"].items():
        print(f"2. {name:4s} overall {row['overall']:.3f}, colours {row['colours']}")
    print("3. |v + J v| / |v| by perturbation resolution:", result["stretch"])
    mf = result["mean_field"]
    print(f"4. mean field share of ||f||^2: {mf['mean_field_share']:.3f}")
    print("| noise | overall | fidelity |\n| --- | --- | --- |")
    for name, row in mf["rows"].items():
        print(f"| {name} | {row['overall']:.3f} | {row['fidelity']:.3f} |")
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
