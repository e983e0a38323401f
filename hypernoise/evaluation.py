"""Evaluate a method on a prompt set: images, reward scores, GenEval scores, fidelity, cost.

    evaluate(generator, prompts, EvalConfig(method=...), out_dir, judge=None, resume=False) -> results dict

writes ``results.json`` (INTERFACE.md), ``per_prompt.jsonl``, ``per_image.jsonl`` (one row per
image, appended as batches finish: what ``resume`` goes on from) and, with ``geneval_layout``,
GenEval's folder layout (``<index:05d>/metadata.jsonl``, ``<index:05d>/samples/<seed:05d>.png``).

This module only loops, scores and writes: the methods are ``methods.METHODS`` (one runner
signature, each method's adapter loader beside it). Every method sees the same initial noise for
a (prompt, seed) pair (``methods.seeded_noise``; a prompt listed more than once gets fresh seeds
for each repeat, ``prompt_seeds``), so base, HyperNoise, ReNO and best-of-N images of one seed
start from one x0. A judge of prompt faithfulness scores every image too: the generator's own
(``generator.judge()``, the built-in world's GenEval-style evaluator) or one given (GenEval itself,
``geneval.scoring.GenEvalJudge``, for the real generators). Images are scored batch by batch and
dropped, so memory stays flat over GenEval's 2,212 images; only a judge's fidelity (a distance
between image sets) keeps them.

``budgets`` (methods that report nested budgets: ReNO's iterations, best-of-N's candidates): the
images of each budget, taken from the one run, are scored by the same scorer and judge as the
full run's, into ``results["budgets"]``.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

import torch

from hypernoise.devices import parse_dtype
from hypernoise.errors import ConfigError, InputFileError, Interrupted
from hypernoise.generators.base import Generator, Judge
from hypernoise.hypernet.base import NoiseHypernetwork, check_passes
from hypernoise.images import save_png
from hypernoise.io import write_json
from hypernoise.methods import METHODS, Cost, MethodOutput, RunConfig, seeded_noise
from hypernoise.methods.base import check_budgets
from hypernoise.methods.reno import RenoConfig
from hypernoise.metrics import frechet_distance, image_features  # noqa: F401  (re-exported)
from hypernoise.rewards import build_reward, parse_spec
from hypernoise.training.config import check_int, check_seeds

#: what defines an evaluation (checked on resume) and its per-image rows, in its output folder
SETTINGS_FILE = "evaluate.json"
ROWS_FILE = "per_image.jsonl"


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
    reward_dtype: Optional[str] = field(default=None, metadata={
        "help": "dtype of the reward models (default float32; ReNO's own runs: float16)"})
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


#: one image to make: (prompt index, prompt, noise seed)
Pair = tuple


def plan_pairs(prompts: Sequence[str], seeds: Sequence[int]) -> list[Pair]:
    """Every (prompt index, prompt, seed) of an evaluation, prompt-major (seeds per ``prompt_seeds``)."""
    return [(i, p, s) for i, (p, entry) in enumerate(zip(prompts, prompt_seeds(prompts, seeds))) for s in entry]


def iter_method(method: str, generator: Generator, reward: torch.nn.Module, pairs: Sequence[Pair],
                config: RunConfig, batch_size: int, warmup: bool = False) -> Iterator[tuple[list, "MethodOutput"]]:
    """Run ``method`` on ``pairs``, ``batch_size`` at a time, each from its seed's noise
    (``seeded_noise``); yields (the batch's pairs, the method's output). ``warmup``: the first
    batch is run once more before the others, untimed and discarded."""
    run = METHODS.get(method).run

    def run_chunk(chunk):
        noise = torch.cat([seeded_noise(generator, s)[0] for _, _, s in chunk])
        return run(generator, reward, noise, [p for _, p, _ in chunk], replace(config, seeds=[s for _, _, s in chunk]))

    if warmup and pairs:
        run_chunk(list(pairs[:batch_size]))
    for start in range(0, len(pairs), batch_size):
        chunk = list(pairs[start : start + batch_size])
        yield chunk, run_chunk(chunk)


def run_method(method: str, generator: Generator, reward: torch.nn.Module, prompts: Sequence[str],
               seeds: Sequence[int], config: RunConfig, batch_size: int,
               keep_partial: bool = False, warmup: bool = False) -> MethodRun:
    """Images (CPU, prompt-major: every seed of prompt 0 first; seeds per ``prompt_seeds``) and
    the mean per-image cost of ``method``, ``batch_size`` (prompt, seed) pairs at a time; with
    ``config.budgets``, the images and cost of each budget too.

    ``keep_partial``: an interrupt (KeyboardInterrupt) between or inside batches returns the
    images of the batches finished so far instead of propagating (fewer images than pairs)."""
    images, costs, nested = [], [], {k: ([], []) for k in config.budgets}
    try:
        for chunk, out in iter_method(method, generator, reward, plan_pairs(prompts, seeds), config, batch_size,
                                      warmup):
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


# ------------------------------------------------------------------------------- one evaluation
@dataclass
class _Scoring:
    """What scores each batch: the reward terms, the judge (or None), whether images are kept
    (fidelity and ``images_out`` need them all) and where the GenEval layout goes (or None)."""

    scorer: torch.nn.Module
    judge: Optional[Judge]
    keep_images: bool
    layout: Optional[Path]
    records: Optional[Sequence[dict]]
    method: str
    on_images: Optional[Callable[[torch.Tensor], None]] = None


class _Ledger:
    """The per-image rows of one evaluation (prompt index, prompt, seed, each reward term, the
    judge's record, the cost of its batch per image, and the same per nested budget), appended to
    ``per_image.jsonl`` as batches finish so that ``resume`` goes on from the last one. With
    ``out`` None, rows are only kept in memory."""

    def __init__(self, out: Optional[Path], settings: dict, resume: bool):
        self.out, self.settings = out, json.loads(json.dumps(settings, default=str))
        self.rows: list[dict] = self._resumed() if resume and out is not None else []
        self.started = bool(self.rows)

    def _resumed(self) -> list[dict]:
        try:
            saved = json.loads((self.out / SETTINGS_FILE).read_text())
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as e:
            raise InputFileError(f"cannot read {self.out / SETTINGS_FILE} ({e}); pass `overwrite` to start afresh") from None
        for key, value in self.settings.items():
            if not isinstance(saved, dict) or saved.get(key) != value:
                shown = "the prompts" if key == "prompts" else f"`{key}`"
                raise ConfigError(f"cannot resume the evaluation in {self.out}: {shown} differ; pass the run's "
                                  f"settings, or `overwrite` to start afresh")
        return _read_rows(self.out / ROWS_FILE)

    def append(self, rows: list[dict]) -> None:
        if self.out is not None:
            if not self.started:  # the files appear with the first finished batch: an early stop leaves none
                write_json(self.out / SETTINGS_FILE, self.settings)
                (self.out / ROWS_FILE).write_text("")
                self.started = True
            with open(self.out / ROWS_FILE, "a") as f:
                f.write("".join(json.dumps(r) + "\n" for r in rows))
        self.rows += rows


def _read_rows(path: Path) -> list[dict]:
    """The rows of ``per_image.jsonl``; a row torn by a kill (the last line, unparsable) is dropped."""
    rows, lines = [], path.read_text().splitlines() if path.exists() else []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            break
        rows.append(row)
    if len(rows) < len(lines):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def _settings(generator: Generator, cfg: EvalConfig, prompts: Sequence[str], reward, scorer, judge) -> dict:
    """What defines an evaluation, as checked on resume."""
    return {**generator.describe(), "method": cfg.method, "seeds": list(cfg.seeds), "num_steps": cfg.num_steps,
            "reward": reward.spec(), "score_with": scorer.spec(), "adapter": cfg.adapter, "n": cfg.n,
            "reno": _reno_settings(cfg.reno), "passes": cfg.passes, "budgets": list(cfg.budgets),
            "geneval_layout": cfg.geneval_layout, "judge": _describe(judge),
            **({"reward_dtype": cfg.reward_dtype} if cfg.reward_dtype else {}), "prompts": list(prompts)}


def _reno_settings(reno: RenoConfig) -> dict:
    """ReNO's settings as recorded (a float32 noise left out: evaluations recorded before it resume)."""
    out = asdict(reno)
    if out["noise_dtype"] == "float32":
        del out["noise_dtype"]
    return out


def _describe(judge) -> Optional[object]:
    """What identifies a judge in an evaluation's settings: its own description where it has one."""
    if judge is None:
        return None
    return judge.describe() if hasattr(judge, "describe") else type(judge).__name__


def _score_batch(images: torch.Tensor, chunk: list, cost: Cost, scoring: _Scoring, device) -> list[dict]:
    """The rows of one batch: each image's reward terms, judge record and (the batch's mean) cost."""
    prompts = [p for _, p, _ in chunk]
    with torch.no_grad():
        terms = {k: v.float().cpu().tolist() for k, v in scoring.scorer.terms(images.to(device), prompts).items()}
    judged = scoring.judge.evaluate_images(images, prompts) if scoring.judge is not None else [None] * len(chunk)
    return [{"index": i, "prompt": p, "seed": int(s), "rewards": {k: v[j] for k, v in terms.items()},
             "judged": judged[j], "cost": asdict(cost)} for j, (i, p, s) in enumerate(chunk)]


def _finish_batch(chunk: list, out, scoring: _Scoring, device, kept: dict, budgets) -> list[dict]:
    """Score one batch of the run (and of each nested budget), write its images into the GenEval
    layout, keep its images where they are needed; returns its rows (budget rows inside)."""
    images = out.samples.detach().float().cpu()
    rows = _score_batch(images, chunk, out.cost, scoring, device)
    for k in budgets:
        nested = out.budgets[k].samples.detach().float().cpu()
        for row, b in zip(rows, _score_batch(nested, chunk, out.budgets[k].cost, scoring, device)):
            row.setdefault("budgets", {})[str(k)] = {key: b[key] for key in ("rewards", "judged", "cost")}
        if scoring.keep_images:
            kept.setdefault(k, []).extend(nested.unbind(0))
    if scoring.layout is not None:
        _write_layout(scoring, chunk, images, rows)
    if scoring.keep_images:
        kept.setdefault(None, []).extend(images.unbind(0))
    if scoring.on_images is not None:
        scoring.on_images(images)
    return rows


def _write_layout(scoring: _Scoring, chunk: list, images: torch.Tensor, rows: list[dict]) -> None:
    """GenEval's ``<index:05d>/metadata.jsonl`` and ``<index:05d>/samples/<seed:05d>.png`` of a
    batch; a judge's record names its PNG (``filename``) where it has one."""
    for (i, prompt, seed), image, row in zip(chunk, images, rows):
        folder = scoring.layout / f"{i:05d}"
        record = (scoring.records[i] if scoring.records else None) or {"prompt": prompt}
        if not (folder / "metadata.jsonl").exists():
            (folder / "samples").mkdir(parents=True, exist_ok=True)
            (folder / "metadata.jsonl").write_text(json.dumps(record) + "\n")
        png = save_png(image, folder / "samples" / f"{int(seed):05d}.png", prompt, seed, {"method": scoring.method})
        if isinstance(row["judged"], dict) and "filename" in row["judged"]:
            row["judged"]["filename"] = str(png)


def _load_kept(rows: list[dict], layout: Optional[Path]) -> list[torch.Tensor]:
    """The images of resumed rows, read back from the GenEval layout ([3, H, W] in [0, 1])."""
    import numpy as np
    from PIL import Image

    out = []
    for r in rows:
        with Image.open(layout / f"{r['index']:05d}" / "samples" / f"{r['seed']:05d}.png") as im:
            out.append(torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float() / 255)
    return out


def evaluate(generator: Generator, prompts: Sequence[str], cfg: EvalConfig, out_dir=None,
             records: Optional[Sequence[dict]] = None, adapter=None, images_out: Optional[list] = None,
             judge: Optional[Judge] = None, resume: bool = False, progress: bool = False,
             on_images: Optional[Callable[[torch.Tensor], None]] = None) -> dict:
    """Run ``cfg.method`` on every (prompt, seed), score it and write the result files.

    Batch by batch (``cfg.batch_size`` pairs): the method's images are scored by the reward
    terms and the judge, written into the GenEval layout (``cfg.geneval_layout``) and dropped, so
    memory does not grow with the prompt set (images are kept only where the judge's fidelity or
    ``images_out`` needs them all). Each batch's rows are appended to ``per_image.jsonl``.

    ``records``: the prompt file's JSON objects (GenEval metadata), one per prompt, written into
    the GenEval layout. ``adapter``: an already loaded hypernetwork (instead of ``cfg.adapter``).
    ``judge``: the judge of prompt faithfulness (default: the generator's own, ``generator.judge()``;
    GenEval's ``GenEvalJudge`` for a real generator). ``resume``: go on with the run in
    ``out_dir`` (its settings must match; refused where kept images are not on disk).
    Returns the results dict written to ``results.json``; the images (CPU [3, H, W], prompt-major)
    are appended to ``images_out`` when given; ``on_images`` (e.g. a feature extractor) is called
    with each finished batch's images (CPU [B, 3, H, W]) instead, so that nothing has to keep them.

    Interrupted (SIGINT, or SIGTERM under the CLI) while generating, with an ``out_dir``: the
    prompts whose images are all finished are scored and written, ``results.json`` marked
    ``"partial": true`` with ``n_prompts_planned``, and ``errors.Interrupted`` is raised carrying
    that result (no result returns silently partial).
    """
    reward_spec = cfg.reward or generator.default_reward
    reward = build_reward(reward_spec, device=str(generator.device), dtype=parse_dtype(cfg.reward_dtype, "reward_dtype"),
                          per_reward=_used(cfg.reward_weights, reward_spec))
    scorer = reward if not cfg.score_with else build_reward(
        cfg.score_with, device=str(generator.device), per_reward=_used(cfg.reward_weights, cfg.score_with))
    judge = judge if judge is not None else generator.judge() if hasattr(generator, "judge") else None
    out = Path(out_dir) if out_dir is not None else None
    keep = images_out is not None or (judge is not None and cfg.fidelity and _has_fidelity(judge))
    scoring = _Scoring(scorer, judge, keep, out if out is not None and cfg.geneval_layout else None, records,
                       cfg.method, on_images)
    ledger = _Ledger(out, _settings(generator, cfg, prompts, reward, scorer, judge), resume)
    _check_resumable(ledger, cfg, scoring)
    pairs = plan_pairs(prompts, cfg.seeds)
    kept = {None: _load_kept(ledger.rows, scoring.layout)} if keep and ledger.rows else {}
    adapter = adapter if adapter is not None else load_method_adapter(generator, cfg)
    todo = pairs[len(ledger.rows):]
    try:
        with _progress_bar(len(pairs), len(ledger.rows), progress) as bar:
            for chunk, ran in iter_method(cfg.method, generator, reward, todo, run_config(cfg, adapter),
                                          cfg.batch_size, warmup=cfg.warmup):
                ledger.append(_finish_batch(chunk, ran, scoring, generator.device, kept, cfg.budgets))
                bar.update(len(chunk))
    except KeyboardInterrupt:
        if out is None:
            raise
        _interrupted(generator, prompts, cfg, out, ledger, scoring, kept, reward, images_out)
    results = _results(generator, prompts, cfg, ledger.rows, scoring, kept, reward)
    if images_out is not None:
        images_out.extend(kept.get(None, []))
    if out is not None:
        _write_results(out, results, prompts, cfg.seeds, ledger.rows, judge)
    return results


def _has_fidelity(judge) -> bool:
    """Whether ``judge`` measures fidelity (GenEval does not: its ``fidelity`` returns None)."""
    return getattr(judge, "has_fidelity", True)


def _check_resumable(ledger: _Ledger, cfg: EvalConfig, scoring: _Scoring) -> None:
    if ledger.rows and scoring.keep_images and (scoring.layout is None or cfg.budgets):
        raise ConfigError(f"cannot resume the evaluation in {ledger.out}: its fidelity needs every image, and "
                          f"{'nested budgets are' if cfg.budgets else 'the images are'} not on disk (resume works with "
                          f"`geneval_layout` and without `budgets`); pass `overwrite` to start afresh")


@contextlib.contextmanager
def _progress_bar(total: int, done: int, enabled: bool):
    from tqdm.auto import tqdm

    with tqdm(total=total, initial=done, desc="evaluate", unit="img", disable=not enabled, dynamic_ncols=True,
              delay=1) as bar:
        yield bar


def _interrupted(generator, prompts, cfg, out: Path, ledger: _Ledger, scoring, kept, reward, images_out) -> None:
    """Write the results of the prompts whose images are all finished, marked partial, and raise
    ``Interrupted`` saying how to go on."""
    k, planned = len(cfg.seeds), len(prompts)
    done = len(ledger.rows) // k
    go_on = (f"continue with `resume` latest --out {out}" if not (scoring.keep_images and scoring.layout is None)
             else "run it again with `overwrite` for every prompt")
    if not ledger.rows:
        raise Interrupted("interrupted before the first images were finished; nothing was written")
    if not done:
        raise Interrupted(f"interrupted: {len(ledger.rows)} images finished ({out}/{ROWS_FILE}), no prompt "
                          f"complete; {go_on}")
    rows = ledger.rows[: done * k]
    kept = {key: imgs[: done * k] for key, imgs in kept.items()}
    results = _results(generator, prompts[:done], cfg, rows, scoring, kept, reward)
    results.update(partial=True, n_prompts_planned=planned)
    if images_out is not None:
        images_out.extend(kept.get(None, []))
    _write_results(out, results, prompts[:done], cfg.seeds, rows, scoring.judge)
    raise Interrupted(f"interrupted: {out}/results.json holds the first {done} of {planned} prompts, marked "
                      f"\"partial\": true; {go_on}", partial=results)


def _results(generator, prompts, cfg: EvalConfig, rows: list[dict], scoring: _Scoring, kept: dict, reward) -> dict:
    """results.json's dict from the rows: mean reward terms, mean cost, the judge's summary and
    fidelity, and each nested budget scored alike."""
    results = {"method": cfg.method, "generator": generator.name, "n_prompts": len(prompts), "n_images": len(rows),
               "seeds": list(cfg.seeds), "num_steps": cfg.num_steps or generator.default_steps,
               "reward": reward.spec(), **_summary(rows, scoring, kept.get(None), prompts, cfg)}
    if cfg.budgets:  # the full run's budget is the full run: its scores are not computed twice
        full = {k: v for k, v in results.items() if k in ("rewards", "geneval", "fidelity", "cost")}
        results["budgets"] = [{"budget": b, **full} if b == cfg._most() else
                              {"budget": b, **_summary([{**r, **r["budgets"][str(b)]} for r in rows], scoring,
                                                       kept.get(b), prompts, cfg)} for b in cfg.budgets]
    return results


def _summary(rows: list[dict], scoring: _Scoring, images, prompts, cfg: EvalConfig) -> dict:
    """Mean reward per term, mean cost per image (peak memory: the largest), and the judge's
    summary and fidelity, of ``rows``."""
    n = len(rows)
    names = list(rows[0]["rewards"]) if rows else []
    costs = [(1, Cost(**r["cost"])) for r in rows]
    out = {"rewards": {k: sum(r["rewards"][k] for r in rows) / n for k in names}, "cost": _mean_cost(costs).to_dict()}
    if scoring.judge is not None and rows:
        out["geneval"] = scoring.judge.summary([r["judged"] for r in rows])
        if scoring.keep_images and cfg.fidelity and _has_fidelity(scoring.judge):
            per_image_prompts = [r["prompt"] for r in rows]
            out["fidelity"] = scoring.judge.fidelity(torch.stack(images[:n]), per_image_prompts)
    return out


def _used(options: dict, spec: str) -> dict:
    """The per-reward options that apply to the rewards of ``spec``."""
    names = {n for n, _ in parse_spec(spec)}
    return {k: v for k, v in options.items() if k in names}


def _write_results(out: Path, results: dict, prompts, seeds, rows: list[dict], judge) -> None:
    """results.json, per_prompt.jsonl and, for a judge that keeps records of its own format
    (GenEval's), those records in its file (``judge.records_file``)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    k, entry_seeds = len(seeds), prompt_seeds(prompts, seeds)
    with open(out / "per_prompt.jsonl", "w") as f:
        for i, prompt in enumerate(prompts):
            mine = rows[i * k : (i + 1) * k]
            row = {"index": i, "prompt": prompt, "seeds": entry_seeds[i],
                   "rewards": {name: [r["rewards"][name] for r in mine] for name in (mine[0]["rewards"] if mine else {})}}
            if judge is not None:
                row["category"] = mine[0]["judged"].get("category")
                row["correct"] = [bool(r["judged"]["correct"]) for r in mine]
            f.write(json.dumps(row) + "\n")
    records_file = getattr(judge, "records_file", None)
    if records_file:
        with open(out / records_file, "w") as f:
            f.write("".join(json.dumps(judge.public_record(r["judged"])) + "\n" for r in rows))


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
