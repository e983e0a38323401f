"""The model card of a trained adapter: ``adapter/README.md`` with the Hugging Face Hub's YAML header.

    write_model_card(run_dir / "adapter", repo_id=None) -> Path of adapter/README.md

Everything on the card is read from what the run wrote, so it can be (re)written at any time:

    adapter/hypernoise.json     generator, base weights, hypernetwork, training settings
    best/validation.json        the best validation step and its reward, base's beside it
    before_after.json           the world's GenEval-style scores of base and HyperNoise
    samples/compare.png         base row over HyperNoise row, same noise (copied to adapter/samples.png)

The header names ``base_model`` (the Hub id of the base weights; a local folder's family default
where the run trained on a local copy), ``library_name: hypernoise``, tags and the base model's
licence (``BASE_LICENSES``: an adapter is a derivative of its base model's weights). The usage
snippet is ``hypernoise.attach`` on the user's own diffusers pipeline, and the CLI.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

from hypernoise import __version__
from hypernoise.adapter import META_FILE, read_metadata
from hypernoise.errors import AdapterError

CARD_FILE = "README.md"
#: the last line of every card this library writes: a README.md without it is the user's
GENERATED = "Written by hypernoise"
SAMPLES_FILE = "samples.png"

#: generator -> (Hub id of its usual weights, the licence fields of that model's own card)
BASE_MODELS = {
    "sd-turbo": ("stabilityai/sd-turbo", {"license": "other", "license_name": "sai-nc-community",
                                          "license_link": "https://huggingface.co/stabilityai/sd-turbo/blob/main/LICENSE"}),
    "sana-sprint": ("Efficient-Large-Model/Sana_Sprint_0.6B_1024px_diffusers", {
        "license": "other", "license_name": "nsclv2-custom",
        "license_link": "https://huggingface.co/Efficient-Large-Model/Sana_Sprint_0.6B_1024px/blob/main/LICENSE.txt"}),
    "flux-schnell": ("black-forest-labs/FLUX.1-schnell", {"license": "apache-2.0"}),
}
#: the pipeline class a user holds for each family (the attach snippet)
PIPELINES = {"sd-turbo": "AutoPipelineForText2Image", "sana-sprint": "SanaSprintPipeline",
             "flux-schnell": "FluxPipeline"}
#: the diffusers call arguments of each family's usual sampling (the attach snippet)
CALL_ARGS = {"sd-turbo": "num_inference_steps=1, guidance_scale=0.0", "sana-sprint": "num_inference_steps=2",
             "flux-schnell": "num_inference_steps=4, guidance_scale=0.0"}


def base_model(meta: dict) -> tuple[Optional[str], dict]:
    """(Hub id of the base weights, licence fields): the recorded weights when they are a Hub
    id, else the family's usual ones; (None, {}) for generators that are not on the Hub."""
    generator, pretrained = meta.get("generator"), meta.get("pretrained")
    usual, license_fields = BASE_MODELS.get(generator, (None, {}))
    if isinstance(pretrained, str) and pretrained.count("/") == 1 and not Path(pretrained).exists() \
            and not pretrained.startswith(("builtin:", ".", "/")):
        return pretrained, license_fields
    return usual, license_fields


def model_card(adapter_dir, repo_id: Optional[str] = None) -> str:
    """The card's text for the adapter folder ``adapter_dir`` (``RUN/adapter`` or ``RUN/best``:
    the run's results are read from its parent); ``repo_id``: the Hub id the adapter is published
    under (the snippets load it from there; default: the local folder)."""
    adapter_dir = Path(adapter_dir)
    run_dir = adapter_dir.parent
    meta = read_metadata(adapter_dir)
    if meta is None:
        raise AdapterError(f"{adapter_dir} has no {META_FILE}: a card is written for adapters this library trained; "
                           f"pass a training run's adapter/ folder")
    base, license_fields = base_model(meta)
    settings = meta.get("settings") or {}
    generator = meta.get("generator", "?")
    source = repo_id or str(adapter_dir.resolve())
    parts = [_header(meta, base, license_fields, settings), _intro(generator, base, settings),
             _usage(generator, base, source), _training(meta, settings), _results(run_dir),
             _samples(run_dir, adapter_dir), f"{GENERATED} {__version__}.\n"]
    return "\n".join(p for p in parts if p)


def write_model_card(adapter_dir, repo_id: Optional[str] = None) -> Optional[Path]:
    """Write ``adapter_dir/README.md`` (and copy the run's sample grid beside it); returns its
    path. A README.md the library did not write (the user's own card) is kept: None."""
    adapter_dir = Path(adapter_dir)
    path = adapter_dir / CARD_FILE
    if path.is_file() and not is_generated(path):
        return None
    text = model_card(adapter_dir, repo_id)
    grid = adapter_dir.parent / "samples" / "compare.png"
    if grid.is_file():
        shutil.copyfile(grid, adapter_dir / SAMPLES_FILE)
    tmp = path.with_name(f".{CARD_FILE}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def is_generated(card: Path) -> bool:
    """Whether ``card`` is a card this library wrote (and may rewrite)."""
    try:
        lines = card.read_text(errors="replace").rstrip().splitlines()
    except OSError:
        return False
    return bool(lines) and lines[-1].startswith(GENERATED)


def _yaml_list(name: str, values) -> list[str]:
    return [f"{name}:"] + [f"- {v}" for v in values]


def _header(meta: dict, base: Optional[str], license_fields: dict, settings: dict) -> str:
    lines = ["---"]
    if base:
        lines.append(f"base_model: {base}")
    lines.append("library_name: hypernoise")
    lines += [f"{k}: {v}" for k, v in license_fields.items()]
    method = settings.get("method", "hypernoise")
    tags = ["hypernoise", "noise-hypernetwork" if method == "hypernoise" else "lora-fine-tuning", "text-to-image",
            "lora", "reward-alignment", meta.get("generator", "generator")]
    lines += _yaml_list("tags", tags)
    lines.append("---")
    return "\n".join(lines) + "\n"


def _intro(generator: str, base: Optional[str], settings: dict) -> str:
    on = f"[{base}](https://huggingface.co/{base})" if base else f"the `{generator}` generator"
    if settings.get("method", "hypernoise") == "hypernoise":
        what = (f"A noise hypernetwork for {on}: a LoRA on the frozen generator's own backbone that maps the initial "
                f"noise x0 and the prompt to a correction, x0 + f_phi(x0, c), trained against a reward with a "
                f"noise-space penalty (Noise Hypernetworks, HyperNoise). At inference it costs one extra backbone "
                f"forward per image; the generator's weights are unchanged.")
    else:
        what = f"A LoRA fine-tuning of {on}'s backbone against a reward (direct fine-tuning, the baseline of HyperNoise)."
    title = "HyperNoise" if settings.get("method", "hypernoise") == "hypernoise" else "Fine-tuning LoRA"
    return f"# {title} adapter for {base or generator}\n\n{what}\n"


def _usage(generator: str, base: Optional[str], source: str) -> str:
    lines = ["## Usage", ""]
    if generator in PIPELINES and base:
        lines += ["```python", "import torch, hypernoise", f"from diffusers import {PIPELINES[generator]}", "",
                  f'pipe = {PIPELINES[generator]}.from_pretrained("{base}", torch_dtype=torch.bfloat16).to("cuda")',
                  f'hypernoise.attach(pipe, "{source}")',
                  f'image = pipe("a photo of a red cube left of a blue sphere", {CALL_ARGS[generator]},',
                  '             generator=torch.Generator("cuda").manual_seed(0)).images[0]',
                  "hypernoise.detach(pipe)  # the plain pipeline again", "```", ""]
    pretrained = f" --pretrained {base}" if base else ""
    lines += ["```bash", f'hypernoise generate --generator {"auto" if base else generator}{pretrained} '
              f'--adapter {source} --prompt "a photo of a red cube left of a blue sphere" --compare --out images',
              "```", ""]
    return "\n".join(lines)


def _training(meta: dict, settings: dict) -> str:
    train, objective = settings.get("train") or {}, settings.get("objective") or {}
    net = meta.get("hypernetwork") or {}
    rows = [("method", settings.get("method")), ("reward", f"`{settings.get('reward')}`"),
            ("objective", f"{objective.get('kind')}, alpha {objective.get('alpha')}" if objective else None),
            ("steps", train.get("steps")),
            ("batch", f"{train.get('batch_size')} per process x {train.get('gradient_accumulation_steps', 1)} "
                      f"accumulation" if train else None),
            ("optimizer", f"{train.get('optimizer')}, lr {train.get('lr')}, weight decay {train.get('weight_decay')}"
             if train else None),
            ("LoRA", f"rank {net.get('rank')}, alpha {net.get('alpha')}" if net.get("rank") else net.get("type")),
            ("passes", net.get("passes")), ("generator steps", train.get("num_steps")),
            ("base weights", f"`{meta.get('pretrained')}`"), ("seed", train.get("seed")),
            ("hypernoise", meta.get("library_version"))]
    body = [f"| {k} | {v} |" for k, v in rows if v not in (None, "", "`None`")]
    return "\n".join(["## Training", "", "| setting | value |", "|---|---|", *body, ""])


def _results(run_dir: Path) -> Optional[str]:
    lines = []
    best = run_dir / "best" / "validation.json"
    if best.is_file():
        record = json.loads(best.read_text())
        base = (record.get("metrics") or {}).get("base/reward")
        lines += [f"Validation on held-out prompts: reward {record['reward']:.4g} at step {record['step']}"
                  + (f" (base model {base:.4g})" if base is not None else "")
                  + ", the run's best (`best/` holds that adapter).", ""]
    scores = run_dir / "before_after.json"
    if scores.is_file():
        data = json.loads(scores.read_text())
        base, hn = data["base"].get("geneval") or {}, data["hypernoise"].get("geneval") or {}
        lines += ["GenEval-style scores of the world's evaluator on its test prompts:", "",
                  "| | base | HyperNoise |", "|---|---|---|"]
        lines += [f"| {k} | {base[k]:.3f} | {hn[k]:.3f} |" for k in base if base.get(k) is not None
                  and hn.get(k) is not None]
        lines.append("")
    return "\n".join(["## Results", "", *lines]) if lines else None


def _samples(run_dir: Path, adapter_dir: Path) -> Optional[str]:
    if not (run_dir / "samples" / "compare.png").is_file() and not (adapter_dir / SAMPLES_FILE).is_file():
        return None
    return (f"## Samples\n\n![base (top) and HyperNoise (bottom) from the same noise]({SAMPLES_FILE})\n\n"
            f"Top: the base model; bottom: with this adapter; each column one prompt and one noise.\n")
