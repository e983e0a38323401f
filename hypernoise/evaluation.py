"""Evaluate a method on a prompt set: images, reward scores, GenEval-style scores, fidelity, cost.

    evaluate(generator, prompts, EvalConfig(method=...), out_dir) -> results dict

writes ``results.json`` (INTERFACE.md), ``per_prompt.jsonl`` and, with ``geneval_layout``,
GenEval's folder layout (``<index:05d>/metadata.jsonl``, ``<index:05d>/samples/<seed:05d>.png``).

Every method sees the same initial noise for a (prompt, seed) pair (``methods.generate.seeded_noise``;
a prompt listed more than once gets fresh seeds for each repeat, ``prompt_seeds``),
so base, HyperNoise, ReNO and best-of-N images of one seed start from one x0. Methods are looked
up in ``METHODS``; each runner has the shared signature (generator, reward, noise, prompts) ->
``MethodOutput``. A generator whose world has an independent judge (``generator.judge()``, e.g.
the built-in world's GenEval-style evaluator) is also scored by it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Protocol, Sequence

import torch

from hypernoise.errors import ConfigError
from hypernoise.generators.base import Generator
from hypernoise.methods.base import Cost, MethodOutput, measure
from hypernoise.methods.reno import RenoConfig
from hypernoise.registry import Registry


class Judge(Protocol):
    """An evaluator independent of the training reward (the built-in world's GenEval)."""

    def evaluate_images(self, images: torch.Tensor, prompts: Sequence[str]) -> list[dict]: ...
    def summary(self, records: Sequence[dict]) -> dict: ...
    def fidelity(self, images: torch.Tensor, prompts: Sequence[str]) -> float: ...


@dataclass
class EvalConfig:
    """How to evaluate. ``reward`` drives ReNO / best-of-N; ``score_with`` is what is reported."""

    method: str = field(default="base", metadata={"help": "base, hypernoise, reno, best-of-n or finetune"})
    seeds: Sequence[int] = field(default=(0, 1, 2, 3), metadata={"help": "seeds per prompt"})
    num_steps: Optional[int] = field(default=None, metadata={"help": "generator steps (default: the generator's)"})
    reward: Optional[str] = field(default=None, metadata={"help": "reward spec of reno / best-of-n (default: the generator's)"})
    score_with: Optional[str] = field(default=None, metadata={"help": "reward spec to report (default: --reward)"})
    adapter: Optional[str] = field(default=None, metadata={"help": "adapter folder for hypernoise / finetune"})
    reward_weights: dict = field(default_factory=dict, metadata={"help": "per-reward builder options"})
    n: int = field(default=50, metadata={"help": "N of best-of-N"})
    reno: RenoConfig = field(default_factory=RenoConfig)
    passes: Optional[int] = field(default=None, metadata={
        "help": "hypernoise: times the map x <- x + f_phi(x, c) is applied (default: the adapter's)"})
    batch_size: int = field(default=8, metadata={"help": "images per batch"})
    geneval_layout: bool = field(default=False, metadata={"help": "also write GenEval's folder layout"})
    fidelity: bool = field(default=True, metadata={"help": "compute the fidelity distance where the judge has one"})
    #: set when the caller passes a loaded adapter to ``evaluate`` instead of a folder
    adapter_given: bool = False

    def __post_init__(self):
        if self.method not in METHODS:
            METHODS.get(self.method)  # raises UnknownNameError listing the methods
        if not self.seeds:
            raise ConfigError("--seeds needs at least one seed, e.g. --seeds 0,1,2,3")
        if self.passes is not None and (int(self.passes) != self.passes or self.passes < 1):
            raise ConfigError(f"--hypernet-passes must be a positive integer, got {self.passes}")
        if self.passes is not None and self.method != "hypernoise":
            raise ConfigError(f"--hypernet-passes applies to --method hypernoise, not {self.method}")
        if int(self.batch_size) < 1:
            raise ConfigError(f"--batch-size must be a positive integer, got {self.batch_size}")
        if self.method in ADAPTER_METHODS and not self.adapter and not self.adapter_given:
            raise ConfigError(f"--method {self.method} needs --adapter DIR (the adapter/ folder `hypernoise train` wrote)")


@dataclass
class EvalContext:
    """What a method runner may use besides the noise and prompts."""

    generator: Generator
    reward: torch.nn.Module
    config: EvalConfig
    adapter: object = None
    #: the seed of each row of the current batch
    batch_seeds: Sequence[int] = ()


_CANDIDATE_STREAM = 7_000_000_000  # best-of-N candidates of seed s come from seed s + this


Runner = Callable[[EvalContext, torch.Tensor, Sequence[str]], MethodOutput]
METHODS: Registry = Registry("method")


@METHODS.register("base", help="the frozen generator from the initial noise")
@torch.no_grad()
def _run_base(ctx: EvalContext, noise, prompts) -> MethodOutput:
    cost = Cost(generator_forward=float(ctx.generator.nfe(ctx.config.num_steps)))
    with measure(cost, noise.device, len(prompts)):
        samples = ctx.generator.generate(noise, ctx.generator.encode(prompts), ctx.config.num_steps)
    return MethodOutput(samples, cost, noise=noise)


@METHODS.register("hypernoise", help="g(x0 + f_phi(x0, c)) with a trained noise hypernetwork")
@torch.no_grad()
def _run_hypernoise(ctx: EvalContext, noise, prompts) -> MethodOutput:
    gen, hyper = ctx.generator, ctx.adapter
    passes = ctx.config.passes or hyper.passes  # each pass of the map is one hypernetwork forward
    cost = Cost(generator_forward=float(gen.nfe(ctx.config.num_steps)), hypernet_forward=float(passes))
    with measure(cost, noise.device, len(prompts)):
        cond = gen.encode(prompts)
        modulated = hyper.modulate(noise, cond, passes)
        with hyper.adapters_disabled():
            samples = gen.generate(modulated, cond, ctx.config.num_steps)
    return MethodOutput(samples, cost, noise=modulated)


@METHODS.register("reno", help="ReNO: per-prompt optimisation of the noise against the reward")
def _run_reno(ctx: EvalContext, noise, prompts) -> MethodOutput:
    from dataclasses import replace

    from hypernoise.methods.reno import reno

    return reno(ctx.generator, ctx.reward, noise, prompts, replace(ctx.config.reno, num_steps=ctx.config.num_steps))


@METHODS.register("best-of-n", help="best of N noises by the reward")
def _run_best_of_n(ctx: EvalContext, noise, prompts) -> MethodOutput:
    from hypernoise.methods.best_of_n import best_of_n

    seeds = [_CANDIDATE_STREAM + s for s in ctx.batch_seeds]  # a (prompt, seed)'s candidates: its own stream
    return best_of_n(ctx.generator, ctx.reward, noise, prompts, n=ctx.config.n, num_steps=ctx.config.num_steps, seed=seeds)


@METHODS.register("finetune", help="the generator with a directly fine-tuned LoRA")
def _run_finetune(ctx: EvalContext, noise, prompts) -> MethodOutput:
    return _run_base(ctx, noise, prompts)  # the fine-tuning LoRA is loaded into g and always on


# --------------------------------------------------------------------------- the loop
#: methods that run with an adapter; any other method ignores --adapter (g must stay the base)
ADAPTER_METHODS = ("hypernoise", "finetune")


def _load_method_adapter(generator: Generator, cfg: EvalConfig):
    if not cfg.adapter or cfg.method not in ADAPTER_METHODS:
        return None
    if cfg.method == "finetune":
        from hypernoise.methods.finetune import load_finetune_adapter

        return load_finetune_adapter(generator, cfg.adapter)  # injected into g, always on
    from hypernoise.adapter import load_adapter

    return load_adapter(generator, cfg.adapter)


def prompt_seeds(prompts: Sequence[str], seeds: Sequence[int]) -> list[list[int]]:
    """The noise seeds of each entry of ``prompts``: ``seeds`` for a prompt's first entry; a prompt
    listed again (balanced benchmarks cycle a category's few prompts) gets fresh ones, shifted by
    the span of ``seeds`` per repeat, so that a repeat is a new sample and not a copy."""
    span = max(seeds) - min(seeds) + 1
    seen: dict[str, int] = {}
    out = []
    for p in prompts:
        repeat = seen.get(p, 0)
        seen[p] = repeat + 1
        out.append([int(s) + repeat * span for s in seeds])
    return out


def run_method(ctx: EvalContext, prompts: Sequence[str], seeds: Sequence[int]) -> tuple[list[torch.Tensor], Cost]:
    """Images (CPU, prompt-major: every seed of prompt 0 first; seeds per ``prompt_seeds``) and
    the mean per-image cost."""
    from hypernoise.methods.generate import seeded_noise

    pairs = [(p, s) for p, entry in zip(prompts, prompt_seeds(prompts, seeds)) for s in entry]
    runner, images, costs = METHODS.get(ctx.config.method), [], []
    for start in range(0, len(pairs), ctx.config.batch_size):
        chunk = pairs[start : start + ctx.config.batch_size]
        noise = torch.cat([seeded_noise(ctx.generator, s)[0] for _, s in chunk])
        ctx.batch_seeds = [s for _, s in chunk]
        out = runner(ctx, noise, [p for p, _ in chunk])
        images.extend(out.samples.detach().float().cpu().unbind(0))
        costs.append((len(chunk), out.cost))
    return images, _mean_cost(costs)


def _mean_cost(costs: list[tuple[int, Cost]]) -> Cost:
    total = sum(n for n, _ in costs)
    mean = Cost()
    for name in Cost.__dataclass_fields__:
        values = [(n, getattr(c, name)) for n, c in costs]
        agg = max(v for _, v in values) if name == "peak_memory_mb" else sum(n * v for n, v in values) / total
        setattr(mean, name, agg)
    return mean


@torch.no_grad()
def score(images: list[torch.Tensor], prompts_per_image: list[str], scorer, batch_size: int, device) -> dict[str, list[float]]:
    """Each reward term's score of every image: {name: [score per image]}."""
    out: dict[str, list[float]] = {}
    for start in range(0, len(images), batch_size):
        batch = torch.stack(images[start : start + batch_size]).to(device)
        for name, values in scorer.terms(batch, prompts_per_image[start : start + batch_size]).items():
            out.setdefault(name, []).extend(values.float().cpu().tolist())
    return out


def evaluate(generator: Generator, prompts: Sequence[str], cfg: EvalConfig, out_dir=None,
             records: Optional[Sequence[dict]] = None, adapter=None, images_out: Optional[list] = None) -> dict:
    """Run ``cfg.method`` on every (prompt, seed), score it and write the result files.

    ``records``: the prompt file's JSON objects (GenEval metadata), one per prompt, written into
    the GenEval layout. ``adapter``: an already loaded hypernetwork (instead of ``cfg.adapter``).
    Returns the results dict written to ``results.json``; the images (CPU [3, H, W], prompt-major)
    are appended to ``images_out`` when given.
    """
    from hypernoise.rewards import build_reward

    reward_spec = cfg.reward or generator.default_reward
    reward = build_reward(reward_spec, device=str(generator.device), per_reward=_used(cfg.reward_weights, reward_spec))
    scorer = reward if not cfg.score_with else build_reward(
        cfg.score_with, device=str(generator.device), per_reward=_used(cfg.reward_weights, cfg.score_with))
    ctx = EvalContext(generator, reward, cfg, adapter=adapter if adapter is not None else _load_method_adapter(generator, cfg))
    images, cost = run_method(ctx, prompts, cfg.seeds)
    if images_out is not None:
        images_out.extend(images)
    per_image_prompts = [p for p in prompts for _ in cfg.seeds]
    scores = score(images, per_image_prompts, scorer, cfg.batch_size, generator.device)
    results = {"method": cfg.method, "generator": generator.name, "n_prompts": len(prompts), "n_images": len(images),
               "seeds": list(cfg.seeds), "num_steps": cfg.num_steps or generator.default_steps,
               "reward": reward.spec(), "rewards": {k: sum(v) / len(v) for k, v in scores.items()},
               "cost": cost.to_dict()}
    judged = _judge(generator, images, per_image_prompts, cfg, results)
    if out_dir is not None:
        write_outputs(Path(out_dir), results, prompts, cfg.seeds, images, scores, judged, records, cfg.geneval_layout)
    return results


def image_features(images: Sequence[torch.Tensor], judge=None) -> torch.Tensor:
    """Features [N, D] for distribution distances: the judge's where it has them, else the image
    average-pooled to 8x8 (a cheap, model-free feature, 192-d for RGB)."""
    import torch.nn.functional as F

    batch = torch.stack(list(images)).float()
    if judge is not None and hasattr(judge, "features"):
        return judge.features(batch).float()
    return F.adaptive_avg_pool2d(batch, 8).flatten(1)


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to features a [N, D] and b [M, D]."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    # tr sqrt(ca cb) from the eigenvalues of sqrt(ca) cb sqrt(ca) (symmetric PSD)
    va, ua = torch.linalg.eigh(ca)
    root = ua @ torch.diag(va.clamp_min(0).sqrt()) @ ua.T
    cross = torch.linalg.eigvalsh(root @ cb @ root).clamp_min(0).sqrt().sum()
    # >= 0 in exact arithmetic; rounding leaves about -1e-12 for identical sets
    return max(0.0, float((mu_a - mu_b).pow(2).sum() + ca.trace() + cb.trace() - 2 * cross))


def _used(options: dict, spec: str) -> dict:
    """The per-reward options that apply to the rewards of ``spec``."""
    from hypernoise.rewards import parse_spec

    names = {n for n, _ in parse_spec(spec)}
    return {k: v for k, v in options.items() if k in names}


def _judge(generator, images, per_image_prompts, cfg, results) -> Optional[list[dict]]:
    judge = generator.judge() if hasattr(generator, "judge") else None
    if judge is None:
        return None
    batch = torch.stack(images)
    judged = judge.evaluate_images(batch, per_image_prompts)
    results["geneval"] = judge.summary(judged)
    if cfg.fidelity:
        results["fidelity"] = judge.fidelity(batch, per_image_prompts)
    return judged


def write_outputs(out: Path, results: dict, prompts, seeds, images, scores, judged, records, geneval_layout) -> None:
    """results.json, per_prompt.jsonl and (optionally) the GenEval folder layout."""
    from hypernoise.methods.generate import save_png

    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    k, entry_seeds = len(seeds), prompt_seeds(prompts, seeds)
    with open(out / "per_prompt.jsonl", "w") as f:
        for i, prompt in enumerate(prompts):
            row = {"index": i, "prompt": prompt, "seeds": entry_seeds[i],
                   "rewards": {name: v[i * k : (i + 1) * k] for name, v in scores.items()}}
            if judged is not None:
                mine = judged[i * k : (i + 1) * k]
                row["category"] = mine[0].get("category")
                row["correct"] = [bool(r["correct"]) for r in mine]
            f.write(json.dumps(row) + "\n")
    if geneval_layout:
        for i, prompt in enumerate(prompts):
            folder = out / f"{i:05d}"
            record = (records[i] if records else None) or {"prompt": prompt}
            (folder / "samples").mkdir(parents=True, exist_ok=True)
            (folder / "metadata.jsonl").write_text(json.dumps(record) + "\n")
            for j, seed in enumerate(entry_seeds[i]):
                save_png(images[i * k + j], folder / "samples" / f"{int(seed):05d}.png", prompt, seed,
                         {"method": results["method"]})
