"""GenEval's cost: the detector and the colour classifier at their real sizes, random weights.

    OMP_NUM_THREADS=1 python benchmarks/geneval_speed.py                   # this CPU, ~5 min
    python benchmarks/geneval_speed.py --device cuda --out DIR/geneval_gpu.json   # gpu_check.sh
    python benchmarks/geneval_speed.py --quick                             # tiny sizes, seconds (tests)

What is built: the detector at the official architecture (Mask2Former Swin-S, ``DetectorConfig()``)
and OpenAI CLIP ViT-L/14 (24 + 12 layers, QuickGELU) as transformers' ``CLIPModel``, with random
weights (nothing is downloaded: speed does not depend on the values). Images are 512 x 512 (what
GenEval's generation writes; the detector resizes them to 800 x 800).

What is measured, per row (median of ``--rounds`` after one warm-up): the detector's forward on
one batch, ``detect()`` end to end (preprocessing, forward, mmdet's post-processing at 512 px) in
images per second at each batch size and dtype, and the colour classifier in crops per second. A
GenEval image costs one ``detect()`` plus, for the colour tasks (194 of 553 prompts), one or two
crops through CLIP; the last row estimates images per second over GenEval's task mix. Prints a
markdown table and writes every number to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hypernoise.geneval.checkpoint import DetectorConfig  # noqa: E402
from hypernoise.geneval.detector import Detector  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
#: the crops per GenEval image through CLIP: colour clauses are in `colors` (94 prompts, 1 object)
#: and `color_attr` (100 prompts, 2 objects) of 553
CROPS_PER_IMAGE = (94 * 1 + 100 * 2) / 553
#: OpenAI ViT-L/14 (openai/clip-vit-large-patch14's config.json)
CLIP_L14 = dict(text=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                          projection_dim=768, hidden_act="quick_gelu"),
                vision=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                            patch_size=14, image_size=224, projection_dim=768, hidden_act="quick_gelu"))
QUICK = dict(detector=dict(embed_dim=32, depths=(2, 2, 2, 2), swin_heads=(1, 2, 4, 8), feat_channels=32,
                           encoder_layers=1, encoder_ffn=64, decoder_layers=3, decoder_ffn=64, num_queries=12),
             clip_layers=1, image=96)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_seconds(fn, device: torch.device, rounds: int) -> float:
    fn()  # warm-up: first calls of the kernels
    times = []
    for _ in range(rounds):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _images(n: int, size: int) -> list:
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def detector_rows(device, dtypes, batch_sizes, rounds, quick: bool) -> list[dict]:
    config = DetectorConfig(**QUICK["detector"]) if quick else DetectorConfig()
    size = QUICK["image"] if quick else 512
    rows = []
    for dtype in dtypes:
        model = Detector(config).to(device=device, dtype=dtype).eval().requires_grad_(False)
        for b in batch_sizes:
            images = _images(b, size)
            pixels, _ = model.preprocess(images)
            with torch.inference_mode():
                forward = _median_seconds(lambda: model(pixels), device, rounds)
            detect = _median_seconds(lambda: model.detect(images, batch_size=b), device, rounds)
            rows.append({"part": "detector", "dtype": str(dtype).replace("torch.", ""), "batch": b,
                         "input": list(pixels.shape[-2:]), "forward_s": forward, "detect_s": detect,
                         "images_per_s": b / detect})
        del model
    return rows


def colour_rows(device, batch_sizes, rounds, quick: bool) -> list[dict]:
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    from hypernoise.geneval.colour import ColourClassifier

    text, vision = dict(CLIP_L14["text"]), dict(CLIP_L14["vision"])
    if quick:
        text["num_hidden_layers"] = vision["num_hidden_layers"] = QUICK["clip_layers"]
    vocab = {chr(c): i for i, c in enumerate(range(32, 127))}
    vocab.update({f"{k}</w>": len(vocab) + i for i, k in enumerate(list(vocab))})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    text.update(vocab_size=len(vocab), bos_token_id=len(vocab) - 2, eos_token_id=len(vocab) - 1)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision)).to(device).eval()
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:  # the tokenizer reads its files
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")
        tokenizer = CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"))
    rows = []
    size = QUICK["image"] if quick else 512
    for b in batch_sizes:
        classifier = ColourClassifier(model, tokenizer, batch_size=b, autocast=device.type == "cuda")
        image = _images(1, size)[0]
        objects = [(np.array([i, 4.0, size // 2 + i, size - 4.0, 0.9]), None) for i in range(b)]
        classifier.classifier("car")  # the text classifier of a class: once per class, cached
        seconds = _median_seconds(lambda: classifier(image, objects, "car"), device, rounds)
        rows.append({"part": "colour", "dtype": "float16 autocast" if device.type == "cuda" else "float32",
                     "batch": b, "input": [224, 224], "detect_s": seconds, "images_per_s": b / seconds})
    return rows


def table(result: dict) -> str:
    lines = [f"GenEval speed on {result['device_name']} ({result['threads']} CPU threads, torch {result['torch']})",
             "", "| part | dtype | batch | input | forward s | per call s | items/s |", "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        unit = "crops" if r["part"] == "colour" else "images"
        fwd = f"{r['forward_s']:.3f}" if "forward_s" in r else "-"
        lines.append(f"| {r['part']} | {r['dtype']} | {r['batch']} | {r['input'][0]}x{r['input'][1]} | {fwd} | "
                     f"{r['detect_s']:.3f} | {r['images_per_s']:.3f} {unit} |")
    lines += ["", f"GenEval images per second (fp32 detector at the best batch, plus {CROPS_PER_IMAGE:.2f} CLIP "
                  f"crops per image): {result['geneval_images_per_s']:.3f}"]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-sizes", default=None, help="comma-separated (default 1,4 on CPU, 1,4,8 on CUDA)")
    ap.add_argument("--dtypes", default=None, help="comma-separated (default float32,bfloat16)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny sizes: the test path")
    ap.add_argument("--out", default=str(RESULTS / "geneval_speed.json"))
    args = ap.parse_args()
    device = torch.device(args.device)
    batches = [int(b) for b in (args.batch_sizes or ("1,4,8" if device.type == "cuda" else "1,4")).split(",")]
    dtypes = [getattr(torch, d) for d in (args.dtypes or "float32,bfloat16").split(",")]
    rows = detector_rows(device, dtypes, batches, args.rounds, args.quick)
    rows += colour_rows(device, [1, 2], args.rounds, args.quick)
    best = max(r["images_per_s"] for r in rows if r["part"] == "detector" and r["dtype"] == "float32")
    crop_s = min(r["detect_s"] / r["batch"] for r in rows if r["part"] == "colour")
    result = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
              else platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "quick": args.quick, "rows": rows,
              "geneval_images_per_s": 1 / (1 / best + CROPS_PER_IMAGE * crop_s)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
