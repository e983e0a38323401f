"""Training recipes of the shapes world, reproducible on one CPU core.

    train_generator(out_dir, GeneratorRecipe())  rectified-flow base, then one reflow pass into a
                                                 few-step student (the shipped "shapes" generator)
    train_evaluator(out_dir, EvaluatorRecipe())  world GenEval's segmentation networks (two seeds, averaged)
    train_reward(out_dir, RewardRecipe())        the segmentation + centre network of the "shapes" reward

Each writes ``<name>.safetensors`` + ``<name>.json`` (architecture + recipe) into ``out_dir``.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from hypernoise.errors import ConfigError
from hypernoise.world import models
from hypernoise.world.evaluator import NetEnsemble
from hypernoise.world.grammar import COLORS, SHAPES
from hypernoise.world.render import _XX, _YY, NUM_CLASSES, SIZE, make_dataset, random_spec
from hypernoise.world.reward import NET
from hypernoise.world.sampling import euler

Log = Callable[[str], None]


def _setup(seed: int) -> None:
    torch.manual_seed(seed)
    torch.set_flush_denormal(True)


def _save(module: torch.nn.Module, out_dir: Path, name: str, meta: dict) -> None:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(out_dir / f"{name}.safetensors"))
    (out_dir / f"{name}.json").write_text(json.dumps(meta, indent=2) + "\n")


class EMA:
    """Exponential moving average of a module's weights (the weights that get shipped).

    The decay warms up as min(decay, (1 + n) / (10 + n)) after n updates, so the starting
    (e.g. random) weights do not linger in the average: with a fixed 0.999 they would still
    weigh 0.999^2400 = 9 % after 2400 steps, and show as noise in the samples.
    """

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay, self.shadow = decay, copy.deepcopy(module).eval().requires_grad_(False)
        self.updates = 0

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for s, p in zip(self.shadow.parameters(), module.parameters()):
            s.lerp_(p, 1 - decay)


def _every(log: Log, step: int, total: int, start: float, **values) -> None:
    if step % max(1, total // 20) == 0 or step == total:
        text = " ".join(f"{k}={v:.4f}" for k, v in values.items())
        log(f"step {step}/{total} {text} ({time.time() - start:.0f}s)")


# ---------------------------------------------------------------- generator
@dataclass
class GeneratorRecipe:
    seed: int = 0
    data_size: int = 50_000
    batch: int = 128
    lr: float = 1e-3
    ema: float = 0.999
    prompt_dropout: float = 0.1
    base_steps: tuple = (2400, 1500)  # stages; each restarts AdamW from the last EMA weights
    reflow_pairs: int = 8000
    teacher_steps: int = 8
    guidance: float = 3.0
    student_steps: int = 1000
    student_lr: float = 3e-4
    student_t0: float = 0.5  # fraction of student batches at t = 0 (the 1-step map itself)


class TextConditioner(torch.nn.Module):
    """Generator text encoder + its conditioning dicts for prompts ("" = unconditional)."""

    def __init__(self, dim: int, layers: int):
        super().__init__()
        self.encoder = models.TextEncoder(dim, layers)

    def forward(self, prompts: list[str]) -> dict:
        return self.encoder(models.tokenize(prompts, validate=False))


def _flow_loss(unet, text, images, prompts, recipe: GeneratorRecipe) -> torch.Tensor:
    """Rectified flow: x_t = (1 - t) x0 + t x1, target v = x1 - x0 (x1 = image in [-1, 1])."""
    x1 = images * 2 - 1
    x0 = torch.randn_like(x1)
    t = torch.rand(x1.shape[0])
    xt = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * x1
    keep = [p if random.random() >= recipe.prompt_dropout else "" for p in prompts]
    c = text(keep)
    return F.mse_loss(unet(xt, t, c["tokens"], c["mask"], c["pooled"]), x1 - x0)


def train_base(recipe: GeneratorRecipe, log: Log = print, init: Optional[dict] = None, start_stage: int = 0):
    """Train the rectified-flow teacher from scratch in ``recipe.base_steps`` stages; each stage
    restarts AdamW (with warm-up) from the previous stage's EMA weights and reseeds, so a run can
    resume at ``start_stage`` from ``init`` (a ``generator_base.safetensors`` state dict written
    after the stage before) and match an uninterrupted one. Returns (EMA unet, EMA text)."""
    _setup(recipe.seed)
    random.seed(recipe.seed)
    data = make_dataset(recipe.data_size, seed=recipe.seed + 1)
    log(f"rendered {recipe.data_size} images")
    cfg = models.UNetConfig()
    unet, text = models.ShapesUNet(cfg), TextConditioner(cfg.text_dim, cfg.text_layers)
    if init is not None:
        unet.load_state_dict({k[5:]: v for k, v in init.items() if k.startswith("unet.")})
        text.encoder.load_state_dict({k[5:]: v for k, v in init.items() if k.startswith("text.")})
    for i, steps in enumerate(recipe.base_steps):
        if i < start_stage:
            continue
        if i > 0:
            torch.manual_seed(recipe.seed + 1000 * i)
            random.seed(recipe.seed + 1000 * i)
        log(f"base stage {i + 1}/{len(recipe.base_steps)}: {steps} steps")
        unet, text = _flow_stage(unet, text, data, steps, recipe, log, seed=recipe.seed + 1000 * i)
        unet, text = unet.train().requires_grad_(True), text.train().requires_grad_(True)
    return unet.eval(), text.eval()


def _flow_stage(unet, text, data, steps: int, recipe: GeneratorRecipe, log: Log, seed: int):
    params = list(unet.parameters()) + list(text.parameters())
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0)
    ema_u, ema_t = EMA(unet, recipe.ema), EMA(text, recipe.ema)
    gen, start = torch.Generator().manual_seed(seed), time.time()
    for step in range(1, steps + 1):
        for g in opt.param_groups:
            g["lr"] = recipe.lr * min(1.0, step / 200)  # short warm-up
        idx = torch.randint(0, recipe.data_size, (recipe.batch,), generator=gen)
        loss = _flow_loss(unet, text, data.images[idx], [data.prompts[i] for i in idx], recipe)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        ema_u.update(unet)
        ema_t.update(text)
        _every(log, step, steps, start, loss=loss.item())
    return ema_u.shadow, ema_t.shadow


@torch.no_grad()
def teacher_pairs(unet, text, recipe: GeneratorRecipe, log: Log = print):
    """(noise, guided teacher sample) pairs for reflow, prompts balanced over the categories."""
    prompts = _balanced(recipe)
    gen = torch.Generator().manual_seed(recipe.seed + 3)
    noise = torch.randn(recipe.reflow_pairs, 3, 32, 32, generator=gen)
    out, uncond_all = torch.empty_like(noise), text([""])
    for i in range(0, recipe.reflow_pairs, 256):
        p = prompts[i:i + 256]
        cond = text(p)
        uncond = {k: v.expand(len(p), *v.shape[1:]) for k, v in uncond_all.items()}
        out[i:i + 256] = euler(unet, noise[i:i + 256], cond, recipe.teacher_steps, uncond, recipe.guidance)
        if i % 2048 == 0:
            log(f"teacher pairs {i + len(p)}/{recipe.reflow_pairs}")
    return noise, out.clamp(-1, 1), prompts


def _balanced(recipe: GeneratorRecipe) -> list[str]:
    rng = random.Random(recipe.seed + 2)
    return [random_spec(rng).text() for _ in range(recipe.reflow_pairs)]


def reflow(unet, text, pairs, recipe: GeneratorRecipe, log: Log = print):
    """One reflow pass: fine-tune a copy of the teacher on straight paths noise -> teacher sample,
    with ``student_t0`` of the batch at t = 0, where one Euler step is the whole map."""
    _setup(recipe.seed + 4)
    noise, target, prompts = pairs
    student = copy.deepcopy(unet).train().requires_grad_(True)
    opt = torch.optim.AdamW(student.parameters(), lr=recipe.student_lr, weight_decay=0.0)
    ema = EMA(student, recipe.ema)
    gen, start = torch.Generator().manual_seed(recipe.seed + 5), time.time()
    with torch.no_grad():
        conds = text(sorted(set(prompts)))
    index = {p: i for i, p in enumerate(sorted(set(prompts)))}
    for step in range(1, recipe.student_steps + 1):
        idx = torch.randint(0, len(prompts), (recipe.batch,), generator=gen)
        rows = torch.tensor([index[prompts[i]] for i in idx])
        x0, x1 = noise[idx], target[idx]
        t = torch.rand(recipe.batch, generator=gen) * (torch.rand(recipe.batch, generator=gen) >= recipe.student_t0)
        xt = (1 - t)[:, None, None, None] * x0 + t[:, None, None, None] * x1
        loss = F.mse_loss(student(xt, t, conds["tokens"][rows], conds["mask"][rows], conds["pooled"][rows]), x1 - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        ema.update(student)
        _every(log, step, recipe.student_steps, start, loss=loss.item())
    return ema.shadow


class _Bundle(torch.nn.Module):
    """What the generator file holds: the UNet and the text encoder, under these two names."""

    def __init__(self, unet, text):
        super().__init__()
        self.unet, self.text = unet, text.encoder


def generator_meta(recipe: GeneratorRecipe, stage: str) -> dict:
    return {"kind": "shapes-generator", "stage": stage, "unet": models.config_dict(models.UNetConfig()),
            "recipe": asdict(recipe)}


def train_generator(out_dir, recipe: Optional[GeneratorRecipe] = None, log: Log = print,
                    init: Optional[dict] = None, start_stage: int = 0) -> Path:
    """Base flow model, teacher pairs, reflow student; writes ``generator.safetensors`` (student)
    and ``generator_base.safetensors`` (teacher) into ``out_dir``. ``init``: continue from these
    base weights (a state dict as saved in ``generator_base.safetensors``) instead of scratch."""
    recipe, out_dir = recipe or GeneratorRecipe(), Path(out_dir)
    torch.set_num_threads(1)
    unet, text = train_base(recipe, log, init, start_stage)
    _save(_Bundle(unet, text), out_dir, "generator_base", generator_meta(recipe, "base"))
    return distill_generator(out_dir, unet, text, recipe, log)


def distill_generator(out_dir, unet, text, recipe: GeneratorRecipe, log: Log = print) -> Path:
    """Teacher pairs + reflow from a trained base; writes ``generator.safetensors``."""
    out_dir = Path(out_dir)
    student = reflow(unet, text, teacher_pairs(unet, text, recipe, log), recipe, log)
    _save(_Bundle(student, text), out_dir, "generator", generator_meta(recipe, "reflow"))
    return out_dir / "generator.safetensors"


# ---------------------------------------------------------------- degradations
def degrade(images: torch.Tensor, gen: torch.Generator, blur: float = 1.2, noise: float = 0.06) -> torch.Tensor:
    """Generator-like artefacts for evaluator/reward training: per-image Gaussian blur (sigma up to
    ``blur`` px, half the images), pixel noise (std up to ``noise``) and a small contrast change."""
    b = images.shape[0]
    sigma = torch.rand(b, generator=gen) * blur * (torch.rand(b, generator=gen) < 0.5)
    r = torch.arange(-2, 3, dtype=images.dtype)
    k1 = torch.exp(-r[None] ** 2 / (2 * sigma[:, None].clamp(min=1e-3) ** 2))
    k1 = k1 / k1.sum(1, keepdim=True)
    k2 = (k1[:, :, None] * k1[:, None, :]).repeat_interleave(3, 0)[:, None]  # (B*3, 1, 5, 5)
    x = F.conv2d(F.pad(images.reshape(1, b * 3, *images.shape[2:]), (2, 2, 2, 2), mode="replicate"), k2, groups=b * 3)
    x = x.view_as(images)
    gain = 1 + 0.15 * (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)
    x = (x - 0.5) * gain + 0.5 + torch.randn(x.shape, generator=gen) * noise * torch.rand(b, 1, 1, 1, generator=gen)
    return x.clamp(0, 1)


def _cosine_lr(opt, base: float, step: int, total: int, warmup: int = 100) -> None:
    lr = base * min(1.0, step / warmup) * 0.5 * (1 + math.cos(math.pi * step / total))
    for g in opt.param_groups:
        g["lr"] = lr


# ---------------------------------------------------------------- evaluator
@dataclass
class EvaluatorRecipe:
    seed: int = 0
    data_size: int = 30_000
    ghost_prob: float = 0.3
    morph_prob: float = 0.15  # in-between shapes with soft shape targets: teaches "unsure"
    blur: float = 1.5
    batch: int = 64
    lr: float = 2e-3
    steps: int = 1000
    #: networks averaged in probability, trained from seeds seed, seed + 1, ... (the shipped: 2)
    members: int = 2


def soft_targets(labels: torch.Tensor, scenes) -> torch.Tensor:
    """Per-pixel class distributions [N, 19, H, W]: one-hot labels, except that a morphed object's
    pixels split (1 - mix) / mix between its two shapes (same colour)."""
    target = F.one_hot(labels, NUM_CLASSES).permute(0, 3, 1, 2).float()
    for i, scene in enumerate(scenes):
        for o in scene:
            if o.morph is None:
                continue
            pix = labels[i] == o.label
            other = o.label + (SHAPES.index(o.morph) - SHAPES.index(o.shape)) * len(COLORS)
            target[i, o.label][pix] = 1 - o.mix
            target[i, other][pix] = o.mix
    return target


def train_evaluator(out_dir, recipe: Optional[EvaluatorRecipe] = None, log: Log = print,
                    name: str = "evaluator") -> Path:
    """Train the segmentation network(s) of world GenEval (per-pixel cross-entropy on degraded
    procedural images), one per member from seeds ``seed, seed + 1, ...``; writes
    ``<name>.safetensors`` (keys ``members.<i>.*`` when there are several) + json."""
    recipe, out_dir = recipe or EvaluatorRecipe(), Path(out_dir)
    if recipe.members < 1:
        raise ConfigError(f"an evaluator needs at least 1 member network, got {recipe.members}")
    seeds = [recipe.seed + i for i in range(recipe.members)]
    nets = [_train_segmenter(replace(recipe, seed=s, members=1), log) for s in seeds]
    if len(nets) == 1:
        meta = {"kind": "shapes-evaluator", "net": {}, "recipe": asdict(recipe)}
        _save(nets[0], out_dir, name, meta)
    else:
        meta = {"kind": "shapes-evaluator", "net": {}, "members": len(nets),
                "recipes": [asdict(replace(recipe, seed=s, members=1)) for s in seeds]}
        _save(NetEnsemble(nets), out_dir, name, meta)
    return out_dir / f"{name}.safetensors"


def _train_segmenter(recipe: EvaluatorRecipe, log: Log) -> models.SegmentationNet:
    torch.set_num_threads(1)
    _setup(recipe.seed + 100)
    data = make_dataset(recipe.data_size, seed=recipe.seed * 1000 + 101, ghost_prob=recipe.ghost_prob,
                        morph_prob=recipe.morph_prob)
    net = models.SegmentationNet()
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=1e-4)
    gen, start = torch.Generator().manual_seed(recipe.seed + 102), time.time()
    for step in range(1, recipe.steps + 1):
        _cosine_lr(opt, recipe.lr, step, recipe.steps)
        idx = torch.randint(0, recipe.data_size, (recipe.batch,), generator=gen)
        logits, _ = net(degrade(data.images[idx], gen, blur=recipe.blur))
        loss = F.cross_entropy(logits, soft_targets(data.labels[idx], [data.scenes[i] for i in idx]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _every(log, step, recipe.steps, start, loss=loss.item())
    return net


# ---------------------------------------------------------------- reward
@dataclass
class RewardRecipe:
    seed: int = 0
    data_size: int = 30_000
    ghost_prob: float = 0.3
    batch: int = 64
    lr: float = 2e-3
    steps: int = 1000
    heat_sigma: float = 1.5  # px, the object-centre Gaussians
    heat_weight: float = 5.0


def centre_heatmaps(scenes, sigma: float) -> torch.Tensor:
    """Per-shape object-centre maps [N, 3, H, W]: a Gaussian of ``sigma`` px at each object's
    centre, clipped to 1 (objects never overlap, so peaks stay apart)."""
    out = torch.zeros(len(scenes), len(SHAPES), SIZE, SIZE)
    for i, scene in enumerate(scenes):
        for o in scene:
            d2 = (_XX - o.cx) ** 2 + (_YY - o.cy) ** 2
            out[i, SHAPES.index(o.shape)] += torch.exp(-d2 / (2 * sigma ** 2))
    return out.clamp(max=1)


def train_reward(out_dir, recipe: Optional[RewardRecipe] = None, log: Log = print) -> Path:
    """Train the reward's segmentation + centre-heatmap network (cross-entropy + weighted BCE on
    degraded procedural images, another seed and size than the evaluator's); writes
    ``reward.safetensors`` + json (with ``per_object``, the heatmap mass of one object)."""
    recipe, out_dir = recipe or RewardRecipe(), Path(out_dir)
    torch.set_num_threads(1)
    _setup(recipe.seed + 200)
    data = make_dataset(recipe.data_size, seed=recipe.seed * 1000 + 201, ghost_prob=recipe.ghost_prob)
    net = models.SegmentationNet(**NET)
    opt = torch.optim.AdamW(net.parameters(), lr=recipe.lr, weight_decay=1e-4)
    gen, start = torch.Generator().manual_seed(recipe.seed + 202), time.time()
    for step in range(1, recipe.steps + 1):
        _cosine_lr(opt, recipe.lr, step, recipe.steps)
        idx = torch.randint(0, recipe.data_size, (recipe.batch,), generator=gen)
        heat = centre_heatmaps([data.scenes[i] for i in idx], recipe.heat_sigma)
        logits, _ = net(degrade(data.images[idx], gen))
        seg = F.cross_entropy(logits[:, :NUM_CLASSES], data.labels[idx])
        centres = F.binary_cross_entropy_with_logits(logits[:, NUM_CLASSES:], heat)
        loss = seg + recipe.heat_weight * centres
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _every(log, step, recipe.steps, start, seg=seg.item(), centres=centres.item())
    sample = data.scenes[:1000]
    per_object = float(centre_heatmaps(sample, recipe.heat_sigma).sum() / sum(len(s) for s in sample))
    meta = {"kind": "shapes-reward", "net": NET, "per_object": per_object, "recipe": asdict(recipe)}
    _save(net, out_dir, "reward", meta)
    return out_dir / "reward.safetensors"
