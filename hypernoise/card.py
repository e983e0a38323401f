"""The model card of a trained adapter: ``adapter/README.md``, made with huggingface_hub's ``ModelCard``.

    write_model_card(run_dir / "adapter", repo_id=None) -> Path of adapter/README.md

Everything on the card is read from what the run wrote, so it can be (re)written at any time:

    adapter/hypernoise.json     generator, base weights, size, hypernetwork and training settings
    best/validation.json        the best validation step and its reward, base's beside it
    before_after.json           the world's GenEval-style scores of base and HyperNoise
    samples/compare.png         base row over the trained row, same noise (copied to adapter/samples.png)
    samples/NN-<method>.png     the trained images, with their prompts (copied to adapter/samples/NN.png)

The header is ``huggingface_hub.ModelCardData``: ``base_model`` (the Hub id of the weights the run
trained from, a Hugging Face cache folder's repository included; a local folder names none, and
the card says so), ``pipeline_tag: text-to-image``, ``library_name`` (``diffusers`` for a
fine-tuning LoRA of a diffusers model, which diffusers loads; else ``hypernoise``), tags, the
base model's licence where the card knows that model (``LICENSES``) and a ``widget`` of the
sample images, every one a file of the folder. The usage is each method's own: ``hypernoise.attach``
for a noise hypernetwork, ``load_lora_adapter`` for a fine-tuning LoRA, and the CLI.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from hypernoise import __version__
from hypernoise.adapter import FINETUNE_KIND, META_FILE, WEIGHTS_FILE, read_metadata
from hypernoise.errors import AdapterError
from hypernoise.hub import hub_id_of_weights

CARD_FILE = "README.md"
#: the last line of every card this library writes: a README.md without it is the user's
GENERATED = "Written by hypernoise"
SAMPLES_FILE = "samples.png"
#: the folder of the per-prompt sample images (the card's widget)
SAMPLES_DIR = "samples"
#: the prompt of the usage snippets
PROMPT = "a photo of a red cube left of a blue sphere"

#: Hub id of a base model -> the licence fields of that model's own card (an adapter derives from its weights)
LICENSES = {
    "stabilityai/sd-turbo": {"license": "other", "license_name": "sai-nc-community",
                             "license_link": "https://huggingface.co/stabilityai/sd-turbo/blob/main/LICENSE"},
    "Efficient-Large-Model/Sana_Sprint_0.6B_1024px_diffusers": {
        "license": "other", "license_name": "nsclv2-custom",
        "license_link": "https://huggingface.co/Efficient-Large-Model/Sana_Sprint_0.6B_1024px/blob/main/LICENSE.txt"},
    "Efficient-Large-Model/Sana_Sprint_1.6B_1024px_diffusers": {
        "license": "other", "license_name": "nsclv2-custom",
        "license_link": "https://huggingface.co/Efficient-Large-Model/Sana_Sprint_1.6B_1024px/blob/main/LICENSE.txt"},
    "black-forest-labs/FLUX.1-schnell": {"license": "apache-2.0"},
}


@dataclass(frozen=True)
class Family:
    """How a user of a diffusers family loads its pipeline and calls it (the card's snippets)."""

    pipeline: str  # the diffusers class the snippet imports
    call_args: str  # the family's usual sampling arguments
    backbone: str  # the pipeline attribute of the backbone (where a fine-tuning LoRA loads)


FAMILIES = {
    "sd-turbo": Family("AutoPipelineForText2Image", "num_inference_steps=1, guidance_scale=0.0", "unet"),
    "sana-sprint": Family("SanaSprintPipeline", "num_inference_steps=2", "transformer"),
    "flux-schnell": Family("FluxPipeline", "num_inference_steps=4, guidance_scale=0.0", "transformer"),
}


@dataclass(frozen=True)
class Run:
    """What a card is made of: the adapter's metadata, its folders and where users load it from."""

    meta: dict
    adapter_dir: Path
    source: str  # the repo id the adapter is published under, or its local folder
    base: Optional[str]  # the Hub id of the base weights, or None

    @property
    def settings(self) -> dict:
        return self.meta.get("settings") or {}

    @property
    def generator(self) -> str:
        return str(self.meta.get("generator", "generator"))

    @property
    def finetune(self) -> bool:
        return (self.meta.get("hypernetwork") or {}).get("type") == FINETUNE_KIND

    @property
    def weights(self) -> str:
        """What a snippet loads the base model from: its Hub id, else the local folder it trained on."""
        return self.base or str(self.meta.get("pretrained") or "")

    @property
    def samples(self) -> list[tuple[str, str]]:
        """(file name in the folder, prompt) of each per-prompt sample image."""
        return [(name, _png_prompt(path)) for name, path in sample_sources(self.adapter_dir).items()
                if name != SAMPLES_FILE]


def base_model(meta: dict) -> Optional[str]:
    """The Hub id of the weights the run trained from (``hub.hub_id_of_weights``), or None."""
    return hub_id_of_weights(meta.get("pretrained"))


def model_card(adapter_dir, repo_id: Optional[str] = None) -> str:
    """The card's text for the adapter folder ``adapter_dir`` (``RUN/adapter`` or ``RUN/best``:
    the run's results are read from its parent); ``repo_id``: the Hub id the adapter is published
    under (the snippets load it from there; default: the local folder). Parsed back by
    ``huggingface_hub.ModelCard`` before it is returned."""
    from huggingface_hub import ModelCard

    adapter_dir = Path(adapter_dir)
    meta = read_metadata(adapter_dir)
    if meta is None:
        raise AdapterError(f"{adapter_dir} has no {META_FILE}: a card is written for adapters this library trained; "
                           f"pass a training run's adapter/ folder")
    run = Run(meta, adapter_dir, repo_id or str(adapter_dir.resolve()), base_model(meta))
    body = [_intro(run), _usage(run), _training(run), _results(adapter_dir), _samples(adapter_dir),
            f"{GENERATED} {__version__}.\n"]
    card = ModelCard(f"---\n{_card_data(run).to_yaml()}\n---\n\n" + "\n".join(p for p in body if p))
    return str(card)


def write_model_card(adapter_dir, repo_id: Optional[str] = None) -> Optional[Path]:
    """Write ``adapter_dir/README.md`` (and copy the run's sample images beside it); returns its
    path. A README.md the library did not write (the user's own card) is kept: None."""
    adapter_dir = Path(adapter_dir)
    path = adapter_dir / CARD_FILE
    if path.is_file() and not is_generated(path):
        return None
    for name, data in sample_files(adapter_dir).items():
        (adapter_dir / name).parent.mkdir(exist_ok=True)
        (adapter_dir / name).write_bytes(data)
    text = model_card(adapter_dir, repo_id)
    tmp = path.with_name(f".{CARD_FILE}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def sample_files(adapter_dir) -> dict[str, bytes]:
    """The sample images the adapter folder holds once its card is written (or staged for an
    upload): name in the folder -> bytes (``sample_sources``)."""
    return {name: path.read_bytes() for name, path in sample_sources(adapter_dir).items()}


def sample_sources(adapter_dir) -> dict:
    """Name in the adapter folder -> the file it is copied from: ``samples.png`` (the run's
    ``samples/compare.png`` grid) and ``samples/NN.png`` (the run's trained image of prompt NN);
    the folder's own copies where the run's files are not beside it (a folder moved or downloaded)."""
    adapter_dir = Path(adapter_dir)
    run_samples, own = adapter_dir.parent / "samples", adapter_dir / SAMPLES_DIR
    trained = [p for p in sorted(run_samples.glob("[0-9][0-9]-*.png")) if not p.stem.endswith("-base")]
    if trained or (run_samples / "compare.png").is_file():
        files = {f"{SAMPLES_DIR}/{i:02d}.png": png for i, png in enumerate(trained)}
        grid = run_samples / "compare.png"
    else:
        files = {f"{SAMPLES_DIR}/{p.name}": p for p in sorted(own.glob("*.png"))} if own.is_dir() else {}
        grid = adapter_dir / SAMPLES_FILE
    return {**({SAMPLES_FILE: grid} if grid.is_file() else {}), **files}


def is_generated(card: Path) -> bool:
    """Whether ``card`` is a card this library wrote (and may rewrite)."""
    try:
        lines = card.read_text(errors="replace").rstrip().splitlines()
    except OSError:
        return False
    return bool(lines) and lines[-1].startswith(GENERATED)


# --------------------------------------------------------------------------- the header
def _card_data(run: Run):
    from huggingface_hub import ModelCardData

    diffusers = run.generator in FAMILIES
    method = ["lora-fine-tuning"] if run.finetune else ["noise-hypernetwork"]
    image = run.meta.get("output_kind", "points" if run.generator == "toy2d" else "image") == "image"
    tags = ["hypernoise", *method, "lora", "reward-alignment", run.generator,
            *(["text-to-image"] if image else []), *(["diffusers"] if diffusers else [])]
    widget = [{"text": prompt, "output": {"url": name}} for name, prompt in run.samples[:4]]
    return ModelCardData(base_model=run.base, pipeline_tag="text-to-image" if image else None,
                         library_name="diffusers" if run.finetune and diffusers else "hypernoise",
                         tags=tags, widget=widget or None, **LICENSES.get(run.base or "", {}))


# --------------------------------------------------------------------------- the body
def _intro(run: Run) -> str:
    local = run.generator in FAMILIES and not run.base
    on = (f"[{run.base}](https://huggingface.co/{run.base})" if run.base else
          f"the `{run.generator}` weights in `{run.meta.get('pretrained')}`" if local else
          f"the built-in `{run.generator}` generator")
    if run.finetune:
        title, what = "Fine-tuning LoRA", (f"A LoRA fine-tuning of the backbone of {on} against a reward (direct "
                                            f"fine-tuning, the baseline of HyperNoise): the generator's own weights, "
                                            f"changed.")
    else:
        title, what = "HyperNoise", (
            f"A noise hypernetwork for {on}: a LoRA on the frozen generator's own backbone that maps the initial noise "
            f"x0 and the prompt to a correction, x0 + f_phi(x0, c), trained against a reward with a noise-space "
            f"penalty (Noise Hypernetworks, HyperNoise). At inference it costs one extra backbone forward per "
            f"image; the generator's weights are unchanged.")
    note = (" Those weights are a local folder that names no Hub model, so this card names no `base_model`."
            if local else "")
    return f"# {title} adapter for {run.base or run.generator}\n\n{what}{note}\n"


def _usage(run: Run) -> str:
    lines = ["## Usage", ""]
    if run.generator in FAMILIES and run.weights:
        lines += ["```python", *_python(run), "```", ""]
    lines += ["```bash", _command(run), "```", ""]
    return "\n".join(lines)


def _python(run: Run) -> list[str]:
    """The snippet of the method: ``hypernoise.attach`` or diffusers' ``load_lora_adapter``."""
    family = FAMILIES[run.generator]
    size = "".join(f", {k}={run.meta[k]}" for k in ("height", "width") if isinstance(run.meta.get(k), int))
    load = ([f'pipe.{family.backbone}.load_lora_adapter("{run.source}", weight_name="{WEIGHTS_FILE}", prefix=None, '
             f'adapter_name="reward_finetune")'] if run.finetune else [f'hypernoise.attach(pipe, "{run.source}")'])
    return ["import torch" + ("" if run.finetune else ", hypernoise"), f"from diffusers import {family.pipeline}", "",
            'device = "cuda" if torch.cuda.is_available() else "cpu"',
            'dtype = torch.bfloat16 if device == "cuda" else torch.float32',
            f'pipe = {family.pipeline}.from_pretrained("{run.weights}", torch_dtype=dtype).to(device)', *load,
            f'image = pipe("{PROMPT}", {family.call_args}{size},',
            '             generator=torch.Generator(device).manual_seed(0)).images[0]',
            *([] if run.finetune else ["hypernoise.detach(pipe)  # the plain pipeline again"])]


def _command(run: Run) -> str:
    model = f"--generator auto --pretrained {run.weights}" if run.generator in FAMILIES else f"--generator {run.generator}"
    if run.finetune:
        return (f"hypernoise evaluate {model} --method finetune --adapter {run.source} --prompts prompts.txt "
                f"--out eval")
    return f'hypernoise generate {model} --adapter {run.source} --prompt "{PROMPT}" --compare --out images'


def _training(run: Run) -> str:
    settings, meta = run.settings, run.meta
    train, objective = settings.get("train") or {}, settings.get("objective") or {}
    net = meta.get("hypernetwork") or {}
    warmup = train.get("warmup_steps")
    rows = [("method", settings.get("method")), ("reward", f"`{settings.get('reward')}`"),
            ("objective", f"{objective.get('kind')}, alpha {objective.get('alpha')}" if objective else None),
            ("steps", train.get("steps")),
            ("batch", f"{train.get('batch_size')} per process x {train.get('gradient_accumulation_steps', 1)} "
                      f"accumulation" if train else None),
            ("optimizer", f"{train.get('optimizer')}, lr {train.get('lr')}, weight decay {train.get('weight_decay')}"
             if train else None),
            ("learning rate", f"linear warm-up over {warmup} steps, then constant" if warmup else
             ("constant" if train else None)),
            ("LoRA", f"rank {net.get('rank')}, alpha {net.get('alpha')}" if net.get("rank") else net.get("type")),
            ("passes", net.get("passes")), ("generator steps", train.get("num_steps")),
            ("image size", f"{meta['height']} x {meta['width']}" if meta.get("height") else None),
            ("base weights", f"`{meta.get('pretrained')}`"), ("seed", train.get("seed")),
            ("hypernoise", meta.get("library_version"))]
    body = [f"| {k} | {v} |" for k, v in rows if v not in (None, "", "`None`")]
    return "\n".join(["## Training", "", "| setting | value |", "|---|---|", *body, ""])


def _results(adapter_dir: Path) -> Optional[str]:
    run_dir, lines = adapter_dir.parent, []
    best = run_dir / "best" / "validation.json"
    if best.is_file():
        record = json.loads(best.read_text())
        base = (record.get("metrics") or {}).get("base/reward")
        which = ("this adapter is that step's" if adapter_dir.name == "best" else
                 "this adapter is the run's last step; the run kept that step's adapter too")
        lines += [f"Validation on held-out prompts: reward {record['reward']:.4g} at step {record['step']}"
                  + (f" (base model {base:.4g})" if base is not None else "") + f", the run's best ({which}).", ""]
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


def _samples(adapter_dir: Path) -> Optional[str]:
    if SAMPLES_FILE not in sample_sources(adapter_dir):
        return None
    return (f"## Samples\n\n![base (top) and with this adapter (bottom) from the same noise]({SAMPLES_FILE})\n\n"
            f"Top: the base model; bottom: with this adapter; each column one prompt and one noise.\n")


def _png_prompt(path: Path) -> str:
    """The prompt a sample PNG records (``images.save_png``), else its file name."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            text = image.text.get("prompt") if hasattr(image, "text") else None
    except (OSError, ValueError):
        text = None
    return str(text) if text else path.stem
