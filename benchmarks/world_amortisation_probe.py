"""How hard ReNO's per-noise corrections are to amortise on the shapes world: two probes.

    python benchmarks/world_amortisation_probe.py [--pairs 4096] [--steps 800] [--out results/world_amortisation_probe.json]

1. How small a correction suffices: ReNO with 5 iterations on the 240 test images
   (``benchmark_prompts(20)`` x 2, noise seed 1000), its correction d = x0_ReNO - x0 used whole and
   low-passed (block means over k x k pixels, k = 2, 4, 8; k = 8 leaves 48 numbers per image):
   overall, fidelity and rms of the correction.
2. Whether the LoRA hypernetwork can learn it by regression: ReNO-5 corrections for ``--pairs``
   (noise, train prompt) pairs, low-passed at k = 8, and a rank-8 LoRA hypernetwork fitted to them
   by mean-squared error (AdamW 1e-3, batch 64, ``--steps`` steps). Reported: the share of the
   targets' variance it leaves unexplained (1 = learned nothing), and the same fit to a control
   target of the same kind, -0.5 x the low-passed noise itself.

About 7 minutes on 2 cores. docs/world.md ("Why fidelity drifts") reports a run.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from hypernoise.generators import build_generator
from hypernoise.io import write_json
from hypernoise.hypernet import LoRAHypernetwork, LoraSettings
from hypernoise.methods.reno import RenoConfig, reno
from hypernoise.rewards import build_reward
from hypernoise.world.evaluator import default_evaluator, geneval_summary
from hypernoise.world.grammar import benchmark_prompts
from hypernoise.world.render import make_dataset


def low_pass(x: torch.Tensor, k: int) -> torch.Tensor:
    """Replace every k x k block of ``x`` [B, C, H, W] by its mean."""
    return F.interpolate(F.avg_pool2d(x, k), scale_factor=k, mode="nearest")


def reno_corrections(gen, reward, noise: torch.Tensor, prompts: list[str], chunk: int = 256) -> torch.Tensor:
    """x0_ReNO - x0 after 5 ReNO iterations, [B, *latent_shape]."""
    out = [reno(gen, reward, noise[s:s + chunk], prompts[s:s + chunk], RenoConfig(iters=5)).noise - noise[s:s + chunk]
           for s in range(0, len(prompts), chunk)]
    return torch.cat(out)


def small_corrections(gen, reward) -> list[dict]:
    ev, prompts = default_evaluator(), benchmark_prompts(20) * 2
    noise, reference = gen.sample_noise(len(prompts), seed=1000), make_dataset(len(prompts), 12345, prompts).images
    d = reno_corrections(gen, reward, noise, prompts)
    rows = []
    with torch.no_grad():
        cond = gen.encode(prompts)
        for name, delta in [("base", torch.zeros_like(d)), ("ReNO-5", d)] + [(f"ReNO-5, {k}x{k} block means", low_pass(d, k)) for k in (2, 4, 8)]:
            images = gen.generate(noise + delta, cond)
            rows.append({"row": name, "overall": geneval_summary(ev.evaluate_images(images, prompts))["overall"],
                         "fidelity": ev.fidelity(images, reference), "rms": float(delta.pow(2).mean().sqrt())})
    return rows


def unexplained(gen, noise: torch.Tensor, prompts: list[str], target: torch.Tensor, steps: int) -> float:
    """Fit a fresh rank-8 LoRA hypernetwork f(x0, c) ~ target by MSE; the last 50 steps' mean of
    ||f - target||^2 / ||target||^2."""
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=8))
    opt = torch.optim.AdamW(hyper.trainable_parameters(), lr=1e-3, weight_decay=0.0)
    g, history = torch.Generator().manual_seed(0), []
    for _ in range(steps):
        idx = torch.randint(len(prompts), (64,), generator=g)
        y = target[idx]
        loss = (hyper(noise[idx], gen.encode([prompts[i] for i in idx.tolist()])) - y).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hyper.trainable_parameters(), 1.0)
        opt.step()
        history.append(loss.item() / y.pow(2).mean().item())
    hyper.remove()
    return sum(history[-50:]) / len(history[-50:])


def regression(gen, reward, pairs: int, steps: int) -> dict:
    train = gen.default_prompts("train")
    g = torch.Generator().manual_seed(123)
    prompts = [train[i] for i in torch.randint(len(train), (pairs,), generator=g).tolist()]
    noise = torch.randn(pairs, *gen.latent_shape, generator=g)
    targets = low_pass(reno_corrections(gen, reward, noise, prompts), 8)
    control = -0.5 * low_pass(noise, 8)
    return {"pairs": pairs, "steps": steps, "target_rms": float(targets.pow(2).mean().sqrt()),
            "unexplained_reno": unexplained(gen, noise, prompts, targets, steps),
            "unexplained_control": unexplained(gen, noise, prompts, control, steps)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=4096, help="(noise, train prompt) pairs to regress on")
    ap.add_argument("--steps", type=int, default=800, help="regression steps (batch 64)")
    ap.add_argument("--out", default="benchmarks/results/world_amortisation_probe.json", help="JSON file to write")
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.set_flush_denormal(True)
    gen, reward = build_generator("shapes").freeze(), build_reward("shapes")
    result = {"small_corrections": small_corrections(gen, reward), "regression": regression(gen, reward, args.pairs, args.steps)}
    print("| noise | overall | fidelity | rms of correction |\n| --- | --- | --- | --- |")
    for row in result["small_corrections"]:
        print(f"| {row['row']} | {row['overall']:.3f} | {row['fidelity']:.3f} | {row['rms']:.4f} |")
    reg = result["regression"]
    print(f"regression ({reg['pairs']} pairs, {reg['steps']} steps): unexplained share of the ReNO-5 targets "
          f"{reg['unexplained_reno']:.3f}, of the control target {reg['unexplained_control']:.3f}")
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
