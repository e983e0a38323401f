"""Does an attached pipeline follow ``pipe.to(device)``? The GPU check of issue 31.

A user attaches an adapter to a pipeline loaded on the CPU, then moves it: ``pipe.to("cuda")``
moves the modules in the pipeline's tree, and f_phi's LoRA is parked outside the backbone between
calls. For each family (tiny pipelines built from configs, an adapter with random non-zero
weights), this attaches on the CPU, moves the pipeline to ``--device``, calls it with fixed noise,
and compares the images with the library's own HyperNoise built directly on ``--device`` (a
generator loaded there, the adapter loaded onto it, ``methods.sample``): one line per family with
the largest difference, where the LoRA weights ended up, and how far the images are from the
plain pipeline's (HyperNoise must change them).

    python benchmarks/attach_device.py --device cuda --out attach_device.json

On the CPU it is the test path (``--device cpu``: nothing moves). Exit 1 when a family fails.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

#: per family: the call that makes the pipeline run as the library's generator of the tiny folder
CALLS = {
    "sd-turbo": ({}, {"guidance_scale": 0.0, "num_inference_steps": 1}),
    "sana-sprint": ({"max_sequence_length": 16},
                    {"complex_human_instruction": None, "max_sequence_length": 16, "use_resolution_binning": False,
                     "height": 32, "width": 32, "num_inference_steps": 2}),
    "flux-schnell": ({"height": 32, "width": 32, "max_sequence_length": 16},
                     {"max_sequence_length": 16, "height": 32, "width": 32, "num_inference_steps": 2}),
}
PROMPTS = ["a red apple", "a blue sky"]
TOLERANCE = {torch.float32: 1e-4}


def _adapter(folder: Path, family: str, build: dict, root: Path) -> Path:
    """An adapter of this library for the tiny pipeline in ``folder``: rank-2 LoRA, weights N(0, 0.1^2)."""
    from hypernoise.adapter import save_adapter
    from hypernoise.generators import build_generator
    from hypernoise.hypernet import LoRAHypernetwork, LoraSettings

    gen = build_generator("auto", pretrained=str(folder), device="cpu", **build)
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=2))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        for p in hyper.trainable_parameters():
            torch.nn.init.normal_(p, std=0.1)
    return save_adapter(root / f"{family}-adapter", hyper, gen)


def _rngs(device: str) -> list[torch.Generator]:
    return [torch.Generator(device).manual_seed(s) for s in (11, 12)]


def check(family: str, device: str, root: Path) -> dict:
    """One family: attached on the CPU then moved, against the library built on ``device``."""
    import hypernoise
    from diffusers import DiffusionPipeline
    from hypernoise.adapter import load_adapter
    from hypernoise.generators import build_generator
    from hypernoise.generators.tiny import save_tiny_pipeline
    from hypernoise.methods.base import sample
    from hypernoise.pipeline import attachment

    build, call = CALLS[family]
    folder = save_tiny_pipeline(family, root / family, seed=0)
    adapter = _adapter(folder, family, build, root)

    gen = build_generator("auto", pretrained=str(folder), device=device, **build)
    hyper = load_adapter(gen, adapter)
    x0 = gen.sample_noise(len(PROMPTS), seed=3).to(device)
    with torch.no_grad():
        expected = sample(gen, hyper, x0, gen.encode(PROMPTS), num_steps=call["num_inference_steps"],
                          rng=_rngs(device)).images.float().cpu()

    pipe = DiffusionPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    plain = pipe.to(device)(PROMPTS, latents=x0, generator=_rngs(device), output_type="pt", **call).images
    pipe.to("cpu")
    hypernoise.attach(pipe, adapter)  # attached on the CPU ...
    pipe.to(device)  # ... then moved, as users do
    images = pipe(PROMPTS, latents=x0, generator=_rngs(device), output_type="pt", **call).images.float().cpu()
    lora = {str(p.device) for p in attachment(pipe).hypernet.trainable_parameters()}
    diff = (images - expected).abs().max().item()
    moved = (images - plain.float().cpu()).abs().max().item()
    hypernoise.detach(pipe)
    return {"family": family, "device": device, "max_abs_diff": diff, "lora_devices": sorted(lora),
            "hypernoise_vs_plain": moved, "ok": diff < TOLERANCE[torch.float32] and moved > 1e-3
            and lora == {str(x0.device)}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--families", nargs="+", default=list(CALLS), choices=list(CALLS))
    parser.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [check(family, args.device, Path(tmp)) for family in args.families]
    print("| family | device | attached-then-moved vs library on device (max abs) | LoRA on | HyperNoise vs plain | ok |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['family']} | {r['device']} | {r['max_abs_diff']:.2e} | {', '.join(r['lora_devices'])} "
              f"| {r['hypernoise_vs_plain']:.3f} | {'yes' if r['ok'] else 'NO'} |")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
