"""The side-by-side benchmark: base, HyperNoise, ReNO, best-of-N and direct fine-tuning on the
same held-out prompts and seeds, with quality, fidelity to the base model and cost.

    run_bench(BenchConfig(), out_dir) -> bench dict

trains a noise hypernetwork and a direct fine-tuning LoRA (or reuses given adapters), tracing
reward and fidelity at checkpoints along training (the paper's Figure 4), evaluates the five
methods with ``evaluation.evaluate`` and writes ``bench.json``, ``bench.md``, ``curve.png``
(reward against fidelity over training) and ``tradeoff.png`` (quality against time per image).

The frontier (``BenchConfig.frontier``): every noise method at several budgets on the same
images, each point measured in this run: best-of-N and ReNO at nested budgets of their own runs
(``EvalConfig.budgets``: the best of the first N candidates, the best of the first K iterates,
timed up to there), HyperNoise at 1-3 passes and HyperNoise-initialised ReNO
(``methods.hypernoise_reno``) at nested iterations. ``bench.json`` gains ``frontier`` (the
points, each marked on or off the Pareto front in seconds and in NFEs), ``best_per_budget`` and
``hypernoise_reno_vs_reno``; ``frontier.png`` plots quality against seconds and against NFEs per
image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

import torch

from hypernoise.adapter import FINETUNE_KIND, adapter_kind
from hypernoise.errors import AdapterError, ConfigError, Interrupted
from hypernoise.evaluation import EvalConfig, evaluate
from hypernoise.hypernet.base import check_passes
from hypernoise.methods import train
from hypernoise.methods.base import check_budgets
from hypernoise.methods.finetune import GeneratorLoRA
from hypernoise.methods.hypernoise import HyperNoiseConfig, ModelConfig, build_hypernetwork
from hypernoise.methods.reno import RenoConfig
from hypernoise.metrics import frechet_distance, image_features
from hypernoise.presets import default_config
from hypernoise.training.checkpoint import list_checkpoints, load_checkpoint
from hypernoise.training.config import check_int, check_seeds

METHOD_ORDER = ("base", "hypernoise", "reno", "best-of-n", "finetune")
#: the frontier's families, in the order of its table and plot
FAMILIES = ("base", "hypernoise", "best-of-n", "reno", "hypernoise-reno")


@dataclass
class BenchConfig:
    """What the benchmark runs. Training settings default to the generator's own defaults."""

    model: ModelConfig = field(default_factory=ModelConfig)
    seeds: Sequence[int] = field(default=tuple(range(8)), metadata={"help": "seeds per held-out prompt"})
    reward: Optional[str] = field(default=None, metadata={"help": "reward of every method (default: the generator's)"})
    hypernoise_adapter: Optional[str] = field(default=None, metadata={"help": "reuse this adapter instead of training"})
    finetune_adapter: Optional[str] = field(default=None, metadata={"help": "reuse this adapter instead of training"})
    passes: Optional[int] = field(default=None, metadata={
        "help": "apply HyperNoise's map K times at evaluation (default: the adapter's; training is one pass)"})
    train: Optional[HyperNoiseConfig] = field(default=None, metadata={"help": "training of both methods"})
    curve_points: int = field(default=5, metadata={"help": "checkpoints traced along each training run"})
    reno_iters: int = field(default=50, metadata={"help": "ReNO iterations"})
    reno_optimize_steps: Optional[int] = field(default=None, metadata={
        "help": "generator steps ReNO optimises through (default: 1 on flux-schnell, else the generator's)"})
    n: int = field(default=50, metadata={"help": "N of best-of-N"})
    batch_size: int = field(default=16, metadata={"help": "images per evaluation batch"})
    frontier: bool = field(default=True, metadata={"help": "measure every method at several budgets"})
    finetune: bool = field(default=True, metadata={
        "help": "train and evaluate direct fine-tuning (not on the frontier; its training is a quarter of the time)"})
    best_of_n_budgets: Sequence[int] = field(default=(1, 2, 4, 8, 16, 50), metadata={
        "help": "frontier: N of best-of-N, nested in the run of N = n (those above n dropped)"})
    reno_budgets: Sequence[int] = field(default=(1, 2, 5, 10, 25, 50), metadata={
        "help": "frontier: ReNO iterations, nested in the run of reno_iters (those above it dropped)"})
    hypernoise_passes: Sequence[int] = field(default=(1, 2, 3), metadata={"help": "frontier: HyperNoise passes"})
    prompts: Optional[Sequence[str]] = field(default=None, metadata={
        "help": "held-out prompts every method is evaluated on (default: the generator's test prompts)"})
    records: Optional[Sequence[dict]] = field(default=None, metadata={
        "help": "the prompts' metadata rows (GenEval's), written into each method's GenEval layout"})
    train_prompts: Optional[Sequence[str]] = field(default=None, metadata={
        "help": "prompts the two methods train on (default: the generator's train prompts)"})
    judge: Optional[object] = field(default=None, metadata={
        "help": "the judge of prompt faithfulness (default: the generator's own; GenEval for a real generator)"})
    hypernoise_reno_budgets: Sequence[int] = field(default=(1, 2, 5, 10, 25), metadata={
        "help": "frontier: iterations of HyperNoise-initialised ReNO, nested in one run of the largest "
                "(at most reno_iters)"})
    progress: bool = True

    def __post_init__(self):
        # every setting fails here, not after the training runs
        self.seeds = check_seeds(self.seeds)
        if self.passes is not None:
            check_passes(self.passes)
        check_int(self.curve_points, "curve_points")
        check_int(self.n, "n")
        check_int(self.batch_size, "batch_size")
        self.reno_config()
        for name in ("best_of_n_budgets", "reno_budgets", "hypernoise_reno_budgets"):
            setattr(self, name, check_budgets(getattr(self, name), 10**9, name))
        self.hypernoise_passes = tuple(sorted({check_passes(p, "hypernoise_passes") for p in self.hypernoise_passes}))
        if not self.finetune and self.finetune_adapter is not None:
            raise ConfigError("a fine-tuning adapter was given with fine-tuning skipped; drop `finetune_adapter` or "
                              "keep fine-tuning", field="finetune_adapter")

    def reno_config(self, iters: Optional[int] = None) -> RenoConfig:
        """ReNO's settings: ``reno_iters`` (or ``iters``) iterations through ``reno_optimize_steps`` steps."""
        return RenoConfig(iters=iters or self.reno_iters, optimize_steps=self.reno_optimize_steps)

    def budgets(self, method: str) -> tuple[int, ...]:
        """The nested budgets of ``method``'s frontier run; its full run's budget is always one."""
        if not self.frontier:
            return ()
        most = {"best-of-n": self.n, "reno": self.reno_iters,
                "hypernoise-reno": self.hypernoise_reno_iters()}.get(method)
        if most is None:
            return ()
        asked = {"best-of-n": self.best_of_n_budgets, "reno": self.reno_budgets,
                 "hypernoise-reno": self.hypernoise_reno_budgets}[method]
        return tuple(sorted({b for b in asked if b <= most} | {most}))

    def hypernoise_reno_iters(self) -> int:
        """Iterations of the HyperNoise-initialised ReNO run: its largest budget, at most ReNO's."""
        return min(max(self.hypernoise_reno_budgets, default=self.reno_iters), self.reno_iters)


def _train(method: str, cfg: BenchConfig, train_cfg: HyperNoiseConfig, prompts, out: Path) -> str:
    steps = train_cfg.train.steps
    every = max(1, steps // max(1, cfg.curve_points))
    tc = replace(train_cfg, train=replace(train_cfg.train, checkpoint_every=every, progress=cfg.progress))
    _, result = train(tc, prompts, out, method=method)
    if result.interrupted:  # the trainer stopped at a signal and wrote a checkpoint, no adapter
        raise KeyboardInterrupt
    return str(out / "adapter")


def _curve(method: str, run: Path, cfg: BenchConfig, train_cfg: HyperNoiseConfig, prompts,
           base_features: torch.Tensor) -> list[dict]:
    """Reward and fidelity at each checkpoint of a training run (one seed, held-out prompts)."""
    points = []
    for step, path in list_checkpoints(run / "checkpoints"):
        gen = cfg.model.build()
        weights = load_checkpoint(path)["trainable"]
        if method == "finetune":
            module = GeneratorLoRA(gen, train_cfg.lora)
            eval_method = "base"
        else:
            module = build_hypernetwork(gen, train_cfg)
            eval_method = "hypernoise"
        module.load_trainable_state_dict({k: v.to(gen.device) for k, v in weights.items()})
        ecfg = EvalConfig(method=eval_method, seeds=tuple(cfg.seeds[:1]), reward=cfg.reward, batch_size=cfg.batch_size,
                          adapter_given=True)
        features = Features(gen.judge())
        res = evaluate(gen, prompts, ecfg, adapter=module if method != "finetune" else None, judge=cfg.judge,
                       on_images=features)
        points.append({"step": step, "reward": res["rewards"],
                       "fidelity": frechet_distance(features.all(), base_features),
                       "geneval": (res.get("geneval") or {}).get("overall")})
    return points


class Features:
    """An ``evaluate(..., on_images=)`` sink: the features (``metrics.image_features``: the judge's
    where it has them, else 8x8-pooled pixels) of every batch, so that no image is kept."""

    def __init__(self, judge=None):
        self.judge, self.parts = judge, []

    def __call__(self, images: torch.Tensor) -> None:
        self.parts.append(image_features(list(images), self.judge))

    def all(self) -> torch.Tensor:
        return torch.cat(self.parts)


def distance_to_base(images, base_features: torch.Tensor, generator) -> float:
    """Fréchet distance from a method's images to the base model's, in the judge's feature
    space where the generator has a judge, else in 8x8-pooled pixels."""
    return frechet_distance(image_features(images, generator.judge()), base_features)


def _quality(res: dict) -> float:
    """The headline quality number: GenEval overall where there is a judge, else the reward."""
    if res.get("geneval") and res["geneval"].get("overall") is not None:
        return res["geneval"]["overall"]
    return sum(res["rewards"].values())


def summarize(methods: dict, features: Optional[dict] = None) -> dict:
    """The ratios that matter: recovery of ReNO's gain, ReNO's time over HyperNoise's; and each
    method's distance to the base distribution (from ``features``: method -> [N, D])."""
    q = {m: _quality(r) for m, r in methods.items()}
    gain = q["reno"] - q["base"]
    t = {m: r["cost"]["seconds_per_image"] for m, r in methods.items()}
    return {"quality": q, "recovery": (q["hypernoise"] - q["base"]) / gain if gain else None,
            "reno_over_hypernoise_time": t["reno"] / t["hypernoise"] if t["hypernoise"] else None,
            "fidelity": {m: frechet_distance(f, features["base"]) for m, f in (features or {}).items()},
            "fidelity_to_real": {m: r.get("fidelity") for m, r in methods.items()}}


def _check_adapter_kinds(adapters: dict) -> None:
    """Each adapter given is of its method's kind, said before anything trains: a HyperNoise
    adapter given as the fine-tuning one (or the reverse) would otherwise fail after the rest ran."""
    for method, folder in adapters.items():
        if folder is None:
            continue
        finetune = adapter_kind(folder) == FINETUNE_KIND
        if finetune != (method == "finetune"):
            what, other = ("a fine-tuning adapter", "finetune") if finetune else ("a HyperNoise adapter", "hypernoise")
            raise AdapterError(f"`{method}_adapter` {folder} is {what}; pass it as `{other}_adapter`, or give the "
                               f"adapter `hypernoise train --method {method}` wrote")


def run_bench(cfg: BenchConfig, out_dir, generator=None) -> dict:
    """Run everything into ``out_dir``; ``generator`` (optional) is used only to read prompts and
    defaults: each method gets a freshly built generator so adapters never meet."""
    out = Path(out_dir)
    _check_adapter_kinds({"hypernoise": cfg.hypernoise_adapter, "finetune": cfg.finetune_adapter})
    gen = generator or cfg.model.build()
    prompts = list(cfg.prompts or gen.default_prompts("test") or [])
    train_prompts = list(cfg.train_prompts or gen.default_prompts("train") or [])
    train_cfg = cfg.train or default_config(gen, model=cfg.model, reward=cfg.reward)
    needs_training = cfg.hypernoise_adapter is None or (cfg.finetune and cfg.finetune_adapter is None)
    if not prompts or (needs_training and not train_prompts):
        raise ConfigError(f"generator {gen.name!r} has no built-in {'test' if not prompts else 'train'} prompts to "
                          f"benchmark on; pass `prompts` (held-out) and `train_prompts`, or trained adapters")
    adapters = {"hypernoise": cfg.hypernoise_adapter, "finetune": cfg.finetune_adapter}
    methods, feats, curves, extra = {}, {}, {}, {}
    try:
        for method in METHOD_ORDER:
            if method == "finetune" and not cfg.finetune:
                continue
            if method in adapters and adapters[method] is None:
                adapters[method] = _train(method, cfg, train_cfg, train_prompts, out / f"train-{method}")
                curves[method] = _curve(method, out / f"train-{method}", cfg, train_cfg, prompts, curve_base)
            ecfg = EvalConfig(method=method, seeds=tuple(cfg.seeds), reward=cfg.reward, adapter=adapters.get(method),
                              n=cfg.n, reno=cfg.reno_config(), batch_size=cfg.batch_size,
                              passes=cfg.passes if method == "hypernoise" else None, budgets=cfg.budgets(method),
                              warmup=True, geneval_layout=cfg.judge is not None)
            features = Features(gen.judge())
            methods[method] = evaluate(cfg.model.build(), prompts, ecfg, out / method, on_images=features,
                                       **_judged(cfg))
            feats[method] = features.all()
            if method == "base":  # the curve's reference: base images of the curve's single seed
                curve_base = feats["base"][:: len(cfg.seeds)]
            _report(method, methods[method])
        if cfg.frontier:
            _frontier_runs(cfg, prompts, adapters["hypernoise"], methods, extra, out / "frontier")
    except KeyboardInterrupt:
        raise _interrupted(out, methods, curves, adapters, cfg, len(prompts), extra) from None
    bench = {"methods": methods, **summarize(methods, feats), "curves": curves, "prompts": len(prompts),
             "seeds": list(cfg.seeds)}
    if cfg.frontier:
        bench.update(frontier_summary(frontier_points(methods, extra)))
    (out / "bench.json").write_text(json.dumps(bench, indent=1) + "\n")
    (out / "bench.md").write_text(markdown(bench))
    plot(bench, out)
    if cfg.frontier:
        plot_frontier(bench["frontier"], out / "frontier.png")
    return bench


def _judged(cfg: BenchConfig) -> dict:
    """evaluate()'s judge arguments: a given judge (GenEval) scores each method's images, which are
    also written in GenEval's layout with the prompts' metadata; else the generator's own judge."""
    if cfg.judge is None:
        return {}
    return {"judge": cfg.judge, "records": cfg.records}


def _report(label: str, res: dict) -> None:
    print(f"{label:>10}: quality {_quality(res):.3f}  {res['cost']['seconds_per_image'] * 1000:.1f} ms/image",
          flush=True)


def _frontier_runs(cfg: BenchConfig, prompts, adapter: str, methods: dict, extra: dict, out: Path) -> None:
    """The frontier's runs besides the bench's own: HyperNoise at the passes the bench did not
    evaluate, and HyperNoise-initialised ReNO with its nested budgets; into ``extra``."""
    main = int(methods["hypernoise"]["cost"]["hypernet_forward"])
    common = dict(seeds=tuple(cfg.seeds), reward=cfg.reward, adapter=adapter, n=cfg.n, batch_size=cfg.batch_size,
                  warmup=True, geneval_layout=cfg.judge is not None)
    for passes in cfg.hypernoise_passes:
        if passes != main:
            ecfg = EvalConfig(method="hypernoise", passes=passes, **common)
            res = evaluate(cfg.model.build(), prompts, ecfg, out / f"hypernoise-{passes}passes", **_judged(cfg))
            extra.setdefault("hypernoise", {})[passes] = res
            _report(f"HN x{passes}", res)
    ecfg = EvalConfig(method="hypernoise-reno", passes=cfg.passes, reno=cfg.reno_config(cfg.hypernoise_reno_iters()),
                      budgets=cfg.budgets("hypernoise-reno"), **common)
    extra["hypernoise-reno"] = evaluate(cfg.model.build(), prompts, ecfg, out / "hypernoise-reno", **_judged(cfg))
    _report("HN+ReNO", extra["hypernoise-reno"])


def _point(method: str, budget: int, res: dict) -> dict:
    """One frontier point from an evaluation's results (or one of its budgets)."""
    cost = res["cost"]
    return {"method": method, "budget": int(budget), "quality": _quality(res), "geneval": res.get("geneval"),
            "reward": sum(res["rewards"].values()), "fidelity": res.get("fidelity"),
            "nfe_per_image": cost["nfe_per_image"], "seconds_per_image": cost["seconds_per_image"],
            "peak_memory_mb": cost["peak_memory_mb"], "cost": cost}


def frontier_points(methods: dict, extra: dict) -> list[dict]:
    """Every measured point of the finished runs, ``FAMILIES`` order, each family by budget. The
    base is budget 0 (no pass, no search); HyperNoise's budget is its passes; best-of-N's its N;
    ReNO's and HyperNoise-ReNO's their iterations."""
    points = [_point("base", 0, methods["base"])] if "base" in methods else []
    hn = dict((extra.get("hypernoise") or {}))
    if "hypernoise" in methods:
        hn[int(methods["hypernoise"]["cost"]["hypernet_forward"])] = methods["hypernoise"]
    points += [_point("hypernoise", p, hn[p]) for p in sorted(hn)]
    for method in ("best-of-n", "reno", "hypernoise-reno"):
        res = methods.get(method) or extra.get(method) or {}
        points += [_point(method, b["budget"], b) for b in res.get("budgets", [])]
    return points


def pareto_front(points: Sequence[dict], cost: str) -> list[bool]:
    """Whether each point is on the Pareto front of quality against ``cost``: no other point
    costs at most as much and reads at least as high, one of them strictly."""
    def dominates(q, p):
        return (q[cost] <= p[cost] and q["quality"] >= p["quality"]
                and (q[cost] < p[cost] or q["quality"] > p["quality"]))

    return [not any(dominates(q, p) for q in points if q is not p) for p in points]


def best_per_budget(points: Sequence[dict], cost: str) -> list[dict]:
    """The best method for each budget of ``cost``: the Pareto points by cost, each the best from
    its cost up to the next one's (``to`` None for the last). Points tied in cost and quality
    (the same images reached twice, e.g. the base and best-of-1 in NFEs) keep the first in order."""
    on = pareto_front(points, cost)
    front, seen = [], set()
    for p, keep in sorted(zip(points, on), key=lambda pk: pk[0][cost]):
        if keep and (p[cost], p["quality"]) not in seen:
            seen.add((p[cost], p["quality"]))
            front.append(p)
    return [{"from": p[cost], "to": nxt[cost] if nxt else None, "method": p["method"], "budget": p["budget"],
             "quality": p["quality"]} for p, nxt in zip(front, front[1:] + [None])]


def frontier_summary(points: list[dict]) -> dict:
    """``frontier`` (the points, each marked ``pareto_seconds`` / ``pareto_nfe``), ``best_per_budget``
    (in seconds and in NFEs per image), ``hypernoise_on_front`` (HyperNoise at 1 pass: no point at
    equal or lower seconds per image reads higher) and ``hypernoise_reno_vs_reno`` per iteration
    budget both have."""
    for key, cost in (("pareto_seconds", "seconds_per_image"), ("pareto_nfe", "nfe_per_image")):
        for p, on in zip(points, pareto_front(points, cost)):
            p[key] = on
    hn = next((p for p in points if p["method"] == "hypernoise" and p["budget"] == 1), None)
    on_front = None if hn is None else not any(
        q["seconds_per_image"] <= hn["seconds_per_image"] and q["quality"] > hn["quality"] for q in points)
    reno = {p["budget"]: p for p in points if p["method"] == "reno"}
    pairs = [{"budget": p["budget"], "reno": reno[p["budget"]]["quality"], "hypernoise-reno": p["quality"],
              "gain": p["quality"] - reno[p["budget"]]["quality"],
              "reno_seconds_per_image": reno[p["budget"]]["seconds_per_image"],
              "hypernoise_reno_seconds_per_image": p["seconds_per_image"]}
             for p in points if p["method"] == "hypernoise-reno" and p["budget"] in reno]
    return {"frontier": points, "hypernoise_on_front": on_front, "hypernoise_reno_vs_reno": pairs,
            "best_per_budget": {"seconds_per_image": best_per_budget(points, "seconds_per_image"),
                                "nfe_per_image": best_per_budget(points, "nfe_per_image")}}


def _interrupted(out: Path, methods: dict, curves: dict, adapters: dict, cfg: BenchConfig, n_prompts: int,
                 extra: Optional[dict] = None) -> Interrupted:
    """Write ``bench.json`` marked partial (the methods finished and the frontier points measured,
    none of the summaries that need them all) and the ``Interrupted`` to raise: what was kept and
    which adapters to reuse."""
    bench = {"partial": True, "methods": methods, "curves": curves, "prompts": n_prompts, "seeds": list(cfg.seeds),
             "finished": list(methods)}
    if cfg.frontier:
        bench["frontier"] = frontier_points(methods, extra or {})
    (out / "bench.json").write_text(json.dumps(bench, indent=1) + "\n")
    given = {"hypernoise": cfg.hypernoise_adapter, "finetune": cfg.finetune_adapter}
    trained = [f"`{m}_adapter` {path}" for m, path in adapters.items()
               if path is not None and given[m] is None and Path(path).is_dir()]
    reuse = f"; to skip training again pass {' and '.join(trained)} with another `out`" if trained else ""
    done = ", ".join(methods) or "none"
    return Interrupted(f"interrupted: {out}/bench.json holds the methods finished ({done}), marked \"partial\": "
                       f"true{reuse}", partial=bench)


def markdown(bench: dict) -> str:
    """The table of bench.md."""
    methods = bench["methods"]
    cats = [k for k in (methods["base"].get("geneval") or {}) if k != "overall"]
    head = ["method", "quality"] + cats + ["reward", "dist. to base", "NFE/image", "ms/image", "peak MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m, r in methods.items():
        g = r.get("geneval") or {}
        passes = int(r["cost"].get("hypernet_forward", 0))
        label = f"{m} ({passes} passes)" if m == "hypernoise" and passes > 1 else m
        cells = [label, f"{bench['quality'][m]:.3f}"] + [f"{g[c]:.2f}" if g.get(c) is not None else "-" for c in cats]
        fid = bench["fidelity"].get(m)
        cells += [f"{sum(r['rewards'].values()):.4g}", f"{fid:.4g}" if fid is not None else "-",
                  f"{r['cost']['nfe_per_image']:g}", f"{r['cost']['seconds_per_image'] * 1000:.2f}",
                  f"{r['cost']['peak_memory_mb']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    rec, ratio = bench["recovery"], bench["reno_over_hypernoise_time"]
    lines += ["", f"HyperNoise recovers {rec:.0%} of ReNO's gain, (HN - base) / (ReNO - base)." if rec is not None else "",
              f"ReNO takes {ratio:.0f}x HyperNoise's time per image." if ratio else "", ""]
    if bench.get("frontier"):
        lines += frontier_markdown(bench, cats)
    return "\n".join(lines)


#: how the frontier's table names a family's budget
BUDGET_LABEL = {"base": "", "hypernoise": "x{}", "best-of-n": "N={}", "reno": "K={}", "hypernoise-reno": "K={}"}


def _label(p: dict) -> str:
    budget = BUDGET_LABEL[p["method"]].format(p["budget"])
    return f"{p['method']} {budget}".strip()


def frontier_markdown(bench: dict, cats: Sequence[str]) -> list[str]:
    """The frontier's part of bench.md: the table of points, the best method per budget, the
    Pareto statement for HyperNoise and HyperNoise-ReNO against ReNO at equal iterations."""
    head = ["method", "budget", "quality"] + list(cats) + ["reward", "fidelity", "NFE/image", "ms/image", "peak MB",
                                                          "front (s)", "front (NFE)"]
    lines = ["## Frontier: quality at each budget", "",
             "Every point measured in this run on the same images (nested budgets from one run of the largest, "
             "timed up to their point). HyperNoise points come from one trained adapter (one training seed).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in bench["frontier"]:
        g = p.get("geneval") or {}
        fid = p.get("fidelity")
        cells = [p["method"], str(p["budget"]), f"{p['quality']:.3f}"]
        cells += [f"{g[c]:.2f}" if g.get(c) is not None else "-" for c in cats]
        cells += [f"{p['reward']:.3g}", f"{fid:.3f}" if fid is not None else "-", f"{p['nfe_per_image']:g}",
                  f"{p['seconds_per_image'] * 1000:.2f}", f"{p['peak_memory_mb']:.0f}",
                  "yes" if p["pareto_seconds"] else "", "yes" if p["pareto_nfe"] else ""]
        lines.append("| " + " | ".join(cells) + " |")
    for key, unit, scale in (("seconds_per_image", "ms per image", 1000), ("nfe_per_image", "NFEs per image", 1)):
        lines += ["", f"Best method per budget ({unit}): the Pareto front, each point the best from its cost to the "
                      "next one's.", ""]
        for b in bench["best_per_budget"][key]:
            upto = f"{b['to'] * scale:.3g}" if b["to"] is not None else "up"
            lines.append(f"- {b['from'] * scale:.3g} to {upto}: {_label(b)} ({b['quality']:.3f})")
    on = bench.get("hypernoise_on_front")
    if on is not None:
        lines += ["", "HyperNoise (1 pass) " + ("is" if on else "is not") + " on the Pareto front at its cost: "
                  + ("no" if on else "a") + " measured point at equal or lower seconds per image reads higher."]
    if bench.get("hypernoise_reno_vs_reno"):
        lines += ["", "HyperNoise-initialised ReNO against ReNO at equal iterations:", "",
                  "| K | ReNO | HyperNoise-ReNO | gain | ReNO ms/image | HyperNoise-ReNO ms/image |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['budget']} | {r['reno']:.3f} | {r['hypernoise-reno']:.3f} | {r['gain']:+.3f} | "
                  f"{r['reno_seconds_per_image'] * 1000:.2f} | {r['hypernoise_reno_seconds_per_image'] * 1000:.2f} |"
                  for r in bench["hypernoise_reno_vs_reno"]]
    return lines + [""]


def plot(bench: dict, out: Path) -> None:
    """curve.png: reward vs fidelity along training; tradeoff.png: quality vs time per image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if bench["curves"]:
        fig, ax = plt.subplots(figsize=(6, 4.5), constrained_layout=True)
        for method, points in bench["curves"].items():
            xs = [p["fidelity"] for p in points]
            ys = [sum(p["reward"].values()) for p in points]
            ax.plot(xs, ys, "o-", label=method)
            for p, x, y in zip(points, xs, ys):
                ax.annotate(str(p["step"]), (x, y), fontsize=7, textcoords="offset points", xytext=(3, 3))
        base = bench["methods"]["base"]
        ax.scatter([0.0], [sum(base["rewards"].values())], c="k", marker="*", s=120, label="base", zorder=3)
        ax.set_xlabel("distance to the base distribution (lower: more faithful)")
        ax.set_ylabel("reward")
        ax.set_title("reward against fidelity over training (labels: step)")
        ax.legend()
        fig.savefig(out / "curve.png", dpi=110)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4.5), constrained_layout=True)
    for m, r in bench["methods"].items():
        ax.scatter(r["cost"]["seconds_per_image"], bench["quality"][m], s=60)
        ax.annotate(m, (r["cost"]["seconds_per_image"], bench["quality"][m]), textcoords="offset points", xytext=(4, 4))
    ax.set_xscale("log")
    ax.set_xlabel("seconds per image (log)")
    ax.set_ylabel("quality (GenEval-style overall)")
    fig.savefig(out / "tradeoff.png", dpi=110)
    plt.close(fig)


def plot_frontier(points: Sequence[dict], path: Path) -> None:
    """frontier.png: quality against seconds per image and against NFEs per image (log axes),
    one curve per family labelled by budget, the Pareto front as a dashed step line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    for ax, cost, key, label in ((axes[0], "seconds_per_image", "pareto_seconds", "seconds per image (log)"),
                                 (axes[1], "nfe_per_image", "pareto_nfe", "NFEs per image (log)")):
        for family in FAMILIES:
            mine = sorted((p for p in points if p["method"] == family), key=lambda p: p["budget"])
            if not mine:
                continue
            xs, ys = [p[cost] for p in mine], [p["quality"] for p in mine]
            style = dict(marker="*", s=160, zorder=4) if family == "base" else None
            if style:
                ax.scatter(xs, ys, c="k", label=family, **style)
                continue
            ax.plot(xs, ys, "o-", label=family, ms=5)
            for p, x, y in zip(mine, xs, ys):
                ax.annotate(str(p["budget"]), (x, y), fontsize=7, textcoords="offset points", xytext=(3, -9))
        front = sorted((p for p in points if p[key]), key=lambda p: (p[cost], p["quality"]))
        ax.step([p[cost] for p in front], [p["quality"] for p in front], where="post", color="k", ls="--", lw=1,
                alpha=0.6, label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("quality (GenEval-style overall)")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8, loc="lower right")
    axes[0].set_title("quality against time (labels: N, K iterations or passes)")
    axes[1].set_title("quality against network evaluations")
    fig.savefig(path, dpi=110)
    plt.close(fig)
