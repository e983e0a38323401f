"""Inference cost of HyperNoise on the three diffusers families (tiny random pipelines).

    python benchmarks/bench_generators.py --out bench_generators.json

For each family and step count: the time of g(x0, c) on a plain generator, and of
g(x0 + f_phi(x0, c), c) on the same weights with a LoRA hypernetwork injected, and of the f_phi
pass alone, all with cached prompt embeddings, measured interleaved in one run (median of
--repeats). In network
evaluations HyperNoise costs (steps + 1) / steps times the base; the measured ratio can sit below
that (the VAE decode is shared) or above it (LoRA layers add work to every backbone pass).
Prints a table and writes the numbers as JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

FAMILIES = ["sd-turbo", "sana-sprint", "flux-schnell"]
OPTIONS = {"sd-turbo": {}, "sana-sprint": {"max_sequence_length": 16},
           "flux-schnell": {"height": 32, "width": 32, "max_sequence_length": 16}}


def _load(pretrained, family: str, device: str, options: dict):
    from hypernoise.generators import build_generator

    return build_generator("auto", pretrained=str(pretrained), device=device, **options)


def _timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def bench_family(family: str, pretrained, steps_list: list[int], repeats: int, batch: int, rank: int,
                 device: str, options: dict) -> list[dict]:
    """Median seconds of base and HyperNoise generation at each step count."""
    from hypernoise.hypernet import LoRAHypernetwork, LoraSettings
    from hypernoise.methods import sample

    plain, modulated = _load(pretrained, family, device, options), _load(pretrained, family, device, options)
    hyper = LoRAHypernetwork(modulated, LoraSettings(rank=rank))
    prompts = ["a red apple"] * batch
    cond_plain, cond_mod = plain.encode(prompts), modulated.encode(prompts)
    noise = plain.sample_noise(batch, seed=0)
    rows = []
    for steps in steps_list:
        def base():
            plain.generate(noise, cond_plain, steps)

        def hypernoise():
            sample(modulated, hyper, noise, cond_mod, num_steps=steps)

        def f_only():
            hyper(noise, cond_mod)

        times = {"base": [], "hypernoise": [], "f": []}
        with torch.no_grad():
            for i in range(repeats + 3):  # 3 warm-up rounds, then interleaved measurements
                for name, fn in (("base", base), ("hypernoise", hypernoise), ("f", f_only)):
                    t = _timed(fn, plain.device)
                    if i >= 3:
                        times[name].append(t)
        base_s, hn_s = statistics.median(times["base"]), statistics.median(times["hypernoise"])
        rows.append({"family": family, "steps": steps, "batch": batch, "base_ms": 1e3 * base_s,
                     "hypernoise_ms": 1e3 * hn_s, "f_pass_ms": 1e3 * statistics.median(times["f"]),
                     "ratio": hn_s / base_s, "floor": (steps + 1) / steps})
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--families", nargs="+", default=FAMILIES, choices=FAMILIES)
    parser.add_argument("--steps", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--repeats", type=int, default=30, help="timed runs per cell (median reported)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--rank", type=int, default=16, help="LoRA rank of the hypernetwork")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--pretrained", nargs="+", default=None,
                        help="real weights (hub ids or folders) to time instead of the tiny pipelines")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from hypernoise.generators import detect_generator
    from hypernoise.generators.tiny import save_tiny_pipeline

    rows = []
    bench = dict(steps_list=args.steps, repeats=args.repeats, batch=args.batch_size, rank=args.rank, device=args.device)
    if args.pretrained:
        for pretrained in args.pretrained:
            rows += bench_family(detect_generator(pretrained), pretrained, options={}, **bench)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            for family in args.families:
                folder = save_tiny_pipeline(family, Path(tmp) / family)
                rows += bench_family(family, folder, options=OPTIONS[family], **bench)

    print(f"{'family':<14}{'steps':>6}{'base ms':>10}{'HN ms':>10}{'f ms':>8}{'ratio':>8}{'floor':>8}")
    for r in rows:
        print(f"{r['family']:<14}{r['steps']:>6}{r['base_ms']:>10.2f}{r['hypernoise_ms']:>10.2f}"
              f"{r['f_pass_ms']:>8.2f}{r['ratio']:>8.2f}{r['floor']:>8.2f}")
    meta = {"device": args.device, "threads": args.threads, "torch": torch.__version__,
            "machine": platform.machine(), "repeats": args.repeats, "rank": args.rank,
            "pipelines": args.pretrained or "tiny random"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({**meta, "results": rows}, indent=1))


if __name__ == "__main__":
    main()
