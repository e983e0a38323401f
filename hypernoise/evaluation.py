"""Evaluate a method on a prompt set: images, reward scores, GenEval-style scores, fidelity, cost.

    evaluate(generator, prompts, EvalConfig(method=...), out_dir) -> results dict

writes ``results.json`` (INTERFACE.md), ``per_prompt.jsonl`` and, with ``geneval_layout``,
GenEval's folder layout (``<index:05d>/metadata.jsonl``, ``<index:05d>/samples/<seed:05d>.png``).

This module only loops, scores and writes: the methods are ``methods.METHODS`` (one runner
signature, each method's adapter loader beside it). Every method sees the same initial noise for
a (prompt, seed) pair (``methods.seeded_noise``; a prompt listed more than once gets fresh seeds
for each repeat, ``prompt_seeds``), so base, HyperNoise, ReNO and best-of-N images of one seed
start from one x0. A generator whose world has an independent judge (``generator.judge()``, e.g.
the built-in world's GenEval-style evaluator) is also scored by it.

``budgets`` (methods that report nested budgets: ReNO's iterations, best-of-N's candidates): the
images of each budget, taken from the one run, are scored by the same scorer and judge as the
full run's, into ``results["budgets"]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

import torch

from hypernoise.errors import ConfigError, Interrupted
from hypernoise.generators.base import Generator, Judge  # noqa: F401  (Judge: re-exported)
from hypernoise.hypernet.base import NoiseHypernetwork, check_passes
from hypernoise.images import save_png
from hypernoise.methods import METHODS, Cost, RunConfig, seeded_noise
from hypernoise.methods.base import check_budgets
from hypernoise.methods.reno import RenoConfig
from hypernoise.metrics import frechet_distance, image_features  # noqa: F401  (re-exported)
from hypernoise.rewards import build_reward, parse_spec
from hypernoise.training.config import check_int, check_seeds


@dataclass
class EvalConfig:
    """How to evaluate. ``reward`` drives ReNO / best-of-N; ``score_with`` is what is reported."""

    method: str = field(default="base", metadata={
        "help": "base, hypernoise, reno, best-of-n, hypernoise-reno or finetune"})
    seeds: Sequence[int] = field(default=(0, 1, 2, 3), metadata={"help": "seeds per prompt"})
    num_steps: Optional[int] = field(default=None, metadata={"help": "generator steps (default: the generator's)"})
    reward: Optional[str] = field(default=None, metadata={"help": "reward spec of reno / best-of-n (default: the generator's)"})
    score_with: Optional[str] = field(default=None, metadata={"help": "reward spec to report (default: --reward)"})
    adapter: Optional[str] = field(default=None, metadata={
        "help": "adapter folder for hypernoise / hypernoise-reno / finetune"})
    reward_weights: dict = field(default_factory=dict, metadata={"help": "per-reward builder options"})
    n: int = field(default=50, metadata={"help": "N of best-of-N"})
    reno: RenoConfig = field(default_factory=RenoConfig)
    passes: Optional[int] = field(default=None, metadata={
        "help": "hypernoise: times the map x <- x + f_phi(x, c) is applied (default: the adapter's)"})
    batch_size: int = field(default=8, metadata={"help": "images per batch"})
    geneval_layout: bool = field(default=False, metadata={"help": "also write GenEval's folder layout"})
    fidelity: bool = field(default=True, metadata={"help": "compute the fidelity distance where the judge has one"})
    budgets: Sequence[int] = field(default=(), metadata={
        "help": "nested budgets scored besides the full run (reno / hypernoise-reno: iterations; best-of-n: N)"})
    warmup: bool = field(default=False, metadata={
        "help": "run the method once on the first batch, untimed and discarded, so that one-time costs (first "
                "calls of the kernels) stay out of the seconds per image"})
    #: set when the caller passes a loaded adapter to ``evaluate`` instead of a folder
    adapter_given: bool = False

    def __post_init__(self):
        method = METHODS.get(self.method)  # raises UnknownNameError listing the methods
        self.seeds = check_seeds(self.seeds)  # at least one, each in [0, MAX_SEED], none twice
        if self.num_steps is not None:
            check_int(self.num_steps, "num_steps")
        check_int(self.n, "n")
        if not isinstance(self.reno, RenoConfig):
            raise ConfigError(f"`reno` must be a RenoConfig, got {type(self.reno).__name__}", field="reno")
        if self.passes is not None:
            check_passes(self.passes)
            if self.method not in PASSES_METHODS:
                raise ConfigError(f"`passes` applies to `method` {' or '.join(PASSES_METHODS)}, not {self.method}",
                                  field="passes")
        if self.budgets and method.budget is None:
            with_budgets = ", ".join(m for m in METHODS if METHODS.get(m).budget)
            raise ConfigError(f"`budgets` apply to the methods that nest them ({with_budgets}), not {self.method}",
                              field="budgets")
        self.budgets = check_budgets(self.budgets, self._most(), method.budget or "")
        check_int(self.batch_size, "batch_size")
        if method.needs_adapter and not self.adapter and not self.adapter_given:
            raise ConfigError(f"`method` {self.method} needs `adapter` (the adapter/ folder training wrote)",
                              field="adapter")

    def _most(self) -> int:
        """The largest budget the run has: ``n`` candidates, else ReNO's ``iters``."""
        return self.n if METHODS.get(self.method).budget == "candidates" else self.reno.iters


#: the methods that apply a hypernetwork's map ``passes`` times
PASSES_METHODS = ("hypernoise", "hypernoise-reno")


def load_method_adapter(generator: Generator, cfg: EvalConfig):
    """The adapter of ``cfg.method`` loaded from ``cfg.adapter`` (None for methods without one:
    they ignore --adapter, and g stays the base)."""
    method = METHODS.get(cfg.method)
    if not cfg.adapter or not method.needs_adapter:
        return None
    return method.load_adapter(generator, cfg.adapter)


def run_config(cfg: EvalConfig, adapter=None) -> RunConfig:
    """What the method's runner gets from an evaluation config."""
    return RunConfig(num_steps=cfg.num_steps, adapter=adapter, passes=cfg.passes, n=cfg.n, reno=cfg.reno,
                     budgets=tuple(cfg.budgets))


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


@dataclass
class MethodRun:
    """What ``run_method`` returns: images (CPU [3, H, W], prompt-major), the mean per-image cost,
    and the same for each nested budget of the run (budget -> ``MethodRun``)."""

    images: list
    cost: Cost
    budgets: dict = field(default_factory=dict)


def run_method(method: str, generator: Generator, reward: torch.nn.Module, prompts: Sequence[str],
               seeds: Sequence[int], config: RunConfig, batch_size: int,
               keep_partial: bool = False, warmup: bool = False) -> MethodRun:
    """Images (CPU, prompt-major: every seed of prompt 0 first; seeds per ``prompt_seeds``) and
    the mean per-image cost of ``method``, ``batch_size`` (prompt, seed) pairs at a time; with
    ``config.budgets``, the images and cost of each budget too.

    ``keep_partial``: an interrupt (KeyboardInterrupt) between or inside batches returns the
    images of the batches finished so far instead of propagating (fewer images than pairs).
    ``warmup``: the first batch is run once more before the others, untimed and discarded."""
    pairs = [(p, s) for p, entry in zip(prompts, prompt_seeds(prompts, seeds)) for s in entry]
    run, images, costs = METHODS.get(method).run, [], []
    nested = {k: ([], []) for k in config.budgets}

    def run_chunk(chunk):
        noise = torch.cat([seeded_noise(generator, s)[0] for _, s in chunk])
        return run(generator, reward, noise, [p for p, _ in chunk], replace(config, seeds=[s for _, s in chunk]))

    try:
        if warmup and pairs:
            run_chunk(pairs[:batch_size])
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            out = run_chunk(chunk)
            for k, (imgs, ks) in nested.items():  # before the full run's: an interrupt leaves both alike
                imgs.extend(out.budgets[k].samples.detach().float().cpu().unbind(0))
                ks.append((len(chunk), out.budgets[k].cost))
            images.extend(out.samples.detach().float().cpu().unbind(0))
            costs.append((len(chunk), out.cost))
    except KeyboardInterrupt:
        if not keep_partial:
            raise
    budgets = {k: MethodRun(imgs[: len(images)], _mean_cost(ks[: len(costs)])) for k, (imgs, ks) in nested.items()}
    return MethodRun(images, _mean_cost(costs), budgets)


def _mean_cost(costs: list[tuple[int, Cost]]) -> Cost:
    total = sum(n for n, _ in costs)
    mean = Cost()
    if not total:
        return mean
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

    Interrupted (SIGINT, or SIGTERM under the CLI) while generating, with an ``out_dir``: the
    prompts whose images are all finished are scored and written, ``results.json`` marked
    ``"partial": true`` with ``n_prompts_planned``, and ``errors.Interrupted`` is raised carrying
    that result (no result returns silently partial).
    """
    reward_spec = cfg.reward or generator.default_reward
    reward = build_reward(reward_spec, device=str(generator.device), per_reward=_used(cfg.reward_weights, reward_spec))
    scorer = reward if not cfg.score_with else build_reward(
        cfg.score_with, device=str(generator.device), per_reward=_used(cfg.reward_weights, cfg.score_with))
    adapter = adapter if adapter is not None else load_method_adapter(generator, cfg)
    ran = run_method(cfg.method, generator, reward, prompts, cfg.seeds, run_config(cfg, adapter), cfg.batch_size,
                     keep_partial=out_dir is not None, warmup=cfg.warmup)
    images, cost = ran.images, ran.cost
    planned, done = len(prompts), len(images) // len(cfg.seeds)  # prompts with every seed's image
    if done < planned:  # interrupted: score and write the finished prompts, marked partial
        if not done:
            raise Interrupted("interrupted before the first prompt's images were finished; nothing was written")
        prompts, images, records = prompts[:done], images[: done * len(cfg.seeds)], records and records[:done]
    if images_out is not None:
        images_out.extend(images)
    per_image_prompts = [p for p in prompts for _ in cfg.seeds]
    scores = score(images, per_image_prompts, scorer, cfg.batch_size, generator.device)
    results = {"method": cfg.method, "generator": generator.name, "n_prompts": len(prompts), "n_images": len(images),
               "seeds": list(cfg.seeds), "num_steps": cfg.num_steps or generator.default_steps,
               "reward": reward.spec(), "rewards": {k: sum(v) / len(v) for k, v in scores.items()},
               "cost": cost.to_dict()}
    if done < planned:
        results.update(partial=True, n_prompts_planned=planned)
    judged = _judge(generator, images, per_image_prompts, cfg, results)
    if ran.budgets:  # the full run's budget is the full run: its scores are not computed twice
        full = {k: v for k, v in results.items() if k in ("rewards", "geneval", "fidelity", "cost")}
        results["budgets"] = [{"budget": k, **full} if k == cfg._most() else
                              _budget_results(k, b.images[: len(images)], b.cost, per_image_prompts, scorer, generator,
                                              cfg) for k, b in ran.budgets.items()]
    if out_dir is not None:
        write_outputs(Path(out_dir), results, prompts, cfg.seeds, images, scores, judged, records, cfg.geneval_layout)
    if done < planned:
        raise Interrupted(f"interrupted: {out_dir}/results.json holds the first {done} of {planned} prompts, marked "
                          f"\"partial\": true; run it again with `overwrite` for every prompt", partial=results)
    return results


def _budget_results(budget: int, images, cost: Cost, per_image_prompts, scorer, generator, cfg: EvalConfig) -> dict:
    """One nested budget's entry of ``results["budgets"]``: scored as the full run is."""
    scores = score(images, per_image_prompts, scorer, cfg.batch_size, generator.device)
    entry = {"budget": budget, "rewards": {k: sum(v) / len(v) for k, v in scores.items()}, "cost": cost.to_dict()}
    _judge(generator, images, per_image_prompts, cfg, entry)
    return entry


def _used(options: dict, spec: str) -> dict:
    """The per-reward options that apply to the rewards of ``spec``."""
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


def before_after(generator: Generator, hypernet: NoiseHypernetwork, prompts: Sequence[str],
                 seeds: Sequence[int] = (0, 1), reward: Optional[str] = None) -> Optional[dict]:
    """Base and HyperNoise results on ``prompts`` (``evaluate``), for generators whose world has a
    judge; None otherwise. ``{"base": results, "hypernoise": results}``."""
    if generator.judge() is None:
        return None
    common = dict(seeds=tuple(seeds), reward=reward, batch_size=32)
    with hypernet.adapters_disabled():  # g carries the hypernetwork's LoRA; the base runs without it
        base = evaluate(generator, prompts, EvalConfig(method="base", **common))
    return {"base": base,
            "hypernoise": evaluate(generator, prompts, EvalConfig(method="hypernoise", adapter_given=True, **common),
                                   adapter=hypernet)}
