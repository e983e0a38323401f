"""The side-by-side benchmark: base, HyperNoise, ReNO, best-of-N and direct fine-tuning on the
same held-out prompts and seeds, with quality, fidelity to the base model and cost.

    run_bench(BenchConfig(), out_dir) -> bench dict

trains a noise hypernetwork and a direct fine-tuning LoRA (or reuses given adapters), tracing
reward and fidelity at checkpoints along training (the paper's Figure 4), evaluates the five
methods with ``evaluation.evaluate`` and writes ``bench.json``, ``bench.md``, ``curve.png``
(reward against fidelity over training) and ``tradeoff.png`` (quality against time per image).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Optional, Sequence

import torch

from hypernoise.errors import ConfigError, Interrupted
from hypernoise.evaluation import EvalConfig, evaluate
from hypernoise.hypernet.base import check_passes
from hypernoise.methods import train
from hypernoise.methods.finetune import GeneratorLoRA
from hypernoise.methods.hypernoise import HyperNoiseConfig, ModelConfig, build_hypernetwork
from hypernoise.methods.reno import RenoConfig
from hypernoise.metrics import frechet_distance, image_features
from hypernoise.presets import default_config
from hypernoise.training.checkpoint import list_checkpoints, load_checkpoint
from hypernoise.training.config import check_int, check_seeds

METHOD_ORDER = ("base", "hypernoise", "reno", "best-of-n", "finetune")


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

    def reno_config(self) -> RenoConfig:
        """ReNO's settings: ``reno_iters`` iterations through ``reno_optimize_steps`` steps."""
        return RenoConfig(iters=self.reno_iters, optimize_steps=self.reno_optimize_steps)


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
        images: list = []
        res = evaluate(gen, prompts, ecfg, adapter=module if method != "finetune" else None, images_out=images)
        points.append({"step": step, "reward": res["rewards"], "fidelity": distance_to_base(images, base_features, gen),
                       "geneval": (res.get("geneval") or {}).get("overall")})
    return points


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


def run_bench(cfg: BenchConfig, out_dir, generator=None) -> dict:
    """Run everything into ``out_dir``; ``generator`` (optional) is used only to read prompts and
    defaults: each method gets a freshly built generator so adapters never meet."""
    out = Path(out_dir)
    gen = generator or cfg.model.build()
    prompts, train_prompts = gen.default_prompts("test"), gen.default_prompts("train")
    train_cfg = cfg.train or default_config(gen, model=cfg.model, reward=cfg.reward)
    if not prompts or not train_prompts:
        raise ConfigError(f"generator {gen.name!r} has no built-in train/test prompts to benchmark on")
    adapters = {"hypernoise": cfg.hypernoise_adapter, "finetune": cfg.finetune_adapter}
    methods, feats, curves = {}, {}, {}
    try:
        for method in METHOD_ORDER:
            if method in adapters and adapters[method] is None:
                adapters[method] = _train(method, cfg, train_cfg, train_prompts, out / f"train-{method}")
                curves[method] = _curve(method, out / f"train-{method}", cfg, train_cfg, prompts, curve_base)
            ecfg = EvalConfig(method=method, seeds=tuple(cfg.seeds), reward=cfg.reward, adapter=adapters.get(method),
                              n=cfg.n, reno=cfg.reno_config(), batch_size=cfg.batch_size,
                              passes=cfg.passes if method == "hypernoise" else None)
            images: list = []
            methods[method] = evaluate(cfg.model.build(), prompts, ecfg, out / method, images_out=images)
            feats[method] = image_features(images, gen.judge())
            if method == "base":  # the curve's reference: base images of the curve's single seed
                curve_base = feats["base"][:: len(cfg.seeds)]
            print(f"{method:>10}: quality {_quality(methods[method]):.3f}  "
                  f"{methods[method]['cost']['seconds_per_image'] * 1000:.1f} ms/image", flush=True)
    except KeyboardInterrupt:
        raise _interrupted(out, methods, curves, adapters, cfg, len(prompts)) from None
    bench = {"methods": methods, **summarize(methods, feats), "curves": curves, "prompts": len(prompts),
             "seeds": list(cfg.seeds)}
    (out / "bench.json").write_text(json.dumps(bench, indent=1) + "\n")
    (out / "bench.md").write_text(markdown(bench))
    plot(bench, out)
    return bench


def _interrupted(out: Path, methods: dict, curves: dict, adapters: dict, cfg: BenchConfig, n_prompts: int) -> Interrupted:
    """Write ``bench.json`` marked partial (the methods finished, none of the summaries that need
    them all) and the ``Interrupted`` to raise: what was kept and which adapters to reuse."""
    bench = {"partial": True, "methods": methods, "curves": curves, "prompts": n_prompts, "seeds": list(cfg.seeds),
             "finished": list(methods)}
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
    return "\n".join(lines)


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
