"""The demo's model side, without a web framework: a generator and its HyperNoise adapter loaded
once, and one request (prompt, seed, steps) answered with base and HyperNoise images from the same
noise -- and, when asked, ReNO-K and best-of-N from that noise too -- each with its time per image,
its reward under the adapter's reward spec and the world's judge verdict where there is one.

    load_demo(DemoConfig) -> Demo
    check_request(demo, Request) -> Request      (ConfigError naming what is wrong)
    compare(demo, Request) -> Comparison         (columns: base, HyperNoise[, ReNO-K][, best-of-N])
    Comparison.grid() -> PIL.Image               (one labelled row per column)

The base and HyperNoise images come from ``methods.generate.generate_images``, the calls
``hypernoise generate --compare`` makes, so the page shows the very PNGs that command writes for
the same prompt, seed and steps. ReNO and best-of-N are the registered methods (``METHODS``) run
on g alone (the LoRA hypernetwork shares g's backbone, so its adapters are off meanwhile).
Requests on one device run one at a time (``device_lock``).
"""

from __future__ import annotations

import contextlib
import math
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Optional

import torch

from hypernoise.adapter import load_adapter, read_metadata, resolve_adapter_folder
from hypernoise.errors import ConfigError
from hypernoise.evaluation import score
from hypernoise.generators.base import Generator, Judge
from hypernoise.geneval.metadata import load_metadata
from hypernoise.hypernet.base import NoiseHypernetwork, check_passes
from hypernoise.images import labelled_grid
from hypernoise.methods import METHODS, Cost, RunConfig, seeded_noise
from hypernoise.methods.base import measure
from hypernoise.methods.generate import generate_images
from hypernoise.methods.hypernoise import ModelConfig
from hypernoise.methods.reno import RenoConfig
from hypernoise.rewards import build_reward
from hypernoise.training.config import check_int, check_seed

#: the HyperNoise adapter that ships for the built-in shapes world (how it was trained: its TRAINING.md)
SHIPPED_ADAPTER = Path(__file__).resolve().parents[1] / "assets" / "demo" / "shapes-hypernoise"
#: a prompt longer than this is refused (the text encoders read far fewer tokens)
MAX_PROMPT_CHARS = 500
#: what each optional column is called on the page, by method; {k} is the budget
SEARCH_LABELS = {"reno": "ReNO-{k}", "best-of-n": "best-of-{k}"}

_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


@dataclass
class DemoConfig:
    """What the demo serves: a generator, a HyperNoise adapter, and the reward it shows."""

    model: ModelConfig = field(default_factory=ModelConfig)
    adapter: Optional[str] = field(default=None, metadata={
        "help": "adapter folder or Hub id (default: the adapter that ships for the built-in shapes world)"})
    reward: Optional[str] = field(default=None, metadata={
        "help": "reward spec shown and used by ReNO / best-of-N (default: the adapter's, else the generator's)"})
    reward_weights: dict = field(default_factory=dict, metadata={"help": "per-reward builder options"})
    passes: Optional[int] = field(default=None, metadata={
        "help": "K of the hypernetwork's map (default: the adapter's)"})
    max_steps: int = field(default=50, metadata={"help": "the most generator steps a request may ask for"})
    max_budget: int = field(default=50, metadata={
        "help": "the most ReNO iterations / best-of-N candidates a request may ask for"})
    warmup: bool = field(default=True, metadata={
        "help": "make one comparison before serving, so that the first visitor's times hold no one-time costs"})

    def __post_init__(self):
        check_int(self.max_steps, "max_steps")
        check_int(self.max_budget, "max_budget")
        if self.passes is not None:
            check_passes(self.passes)
        if self.adapter is None and not self.builtin_world:
            given = (f"`pretrained` {self.model.pretrained}" if self.model.pretrained
                     else f"`generator` {self.model.generator}")
            raise ConfigError(f"`adapter` is needed with {given}: the adapter that ships with hypernoise is for the "
                              f"built-in shapes world", field="adapter")

    @property
    def builtin_world(self) -> bool:
        return self.model.generator == "shapes" and self.model.pretrained is None

    def adapter_source(self) -> str:
        return self.adapter or str(SHIPPED_ADAPTER)


@dataclass
class Demo:
    """A loaded demo: the generator with its hypernetwork, the reward it is scored with, the
    world's judge (None where the generator has none) and example prompts."""

    generator: Generator
    hypernet: NoiseHypernetwork
    reward: torch.nn.Module
    judge: Optional[Judge]
    config: DemoConfig
    adapter: str
    examples: list


def load_demo(cfg: DemoConfig) -> Demo:
    """Build the generator, load the adapter onto it and the reward of its spec; warm it up."""
    generator = cfg.model.build()
    folder = resolve_adapter_folder(cfg.adapter_source())
    hypernet = load_adapter(generator, folder)
    spec = cfg.reward or adapter_reward(folder) or generator.default_reward
    reward = build_reward(spec, device=str(generator.device), per_reward=cfg.reward_weights)
    demo = Demo(generator, hypernet, reward, generator.judge(), cfg, str(folder), example_prompts(generator))
    if cfg.warmup and demo.examples:  # first calls of the kernels, the judge's weights: paid here, not shown
        compare(demo, Request(demo.examples[0]))
    return demo


def adapter_reward(folder) -> Optional[str]:
    """The reward spec an adapter was trained against (its ``hypernoise.json``), or None."""
    return ((read_metadata(folder) or {}).get("settings") or {}).get("reward")


def example_prompts(generator: Generator, k: int = 6) -> list:
    """``k`` prompts spread over the world's test prompts, or over GenEval's for a real generator."""
    prompts = generator.default_prompts("test") or [r["prompt"] for r in load_metadata()]
    return list(dict.fromkeys(prompts[:: max(1, len(prompts) // k)]))[:k]


@dataclass
class Request:
    """One comparison to make. ``steps`` None (or 0): the generator's; ``budget``: ReNO's
    iterations K and best-of-N's candidates N, for the columns switched on."""

    prompt: str
    seed: int = 0
    steps: Optional[int] = None
    reno: bool = False
    best_of_n: bool = False
    budget: int = 10


def check_request(demo: Demo, request: Request) -> Request:
    """``request`` with its prompt stripped and its numbers as ints; ``ConfigError`` naming the
    first bad field otherwise (an empty prompt, one the generator cannot read, a seed, steps or
    budget out of range)."""
    prompt = request.prompt.strip() if isinstance(request.prompt, str) else ""
    if not prompt:
        raise ConfigError("enter a prompt (or pick one of the examples)", field="prompt")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ConfigError(f"the prompt has {len(prompt)} characters; keep it under {MAX_PROMPT_CHARS}", field="prompt")
    demo.generator.check_prompts([prompt])
    steps = None if request.steps in (None, 0) else check_int(
        request.steps, "steps", 1, demo.config.max_steps, why="this server's --max-steps")
    budget = check_int(request.budget, "budget", 1, demo.config.max_budget, why="this server's --max-budget")
    return replace(request, prompt=prompt, seed=check_seed(request.seed), steps=steps, budget=budget,
                   reno=bool(request.reno), best_of_n=bool(request.best_of_n))


@dataclass
class Column:
    """One method's image [3, H, W] in [0, 1] (CPU), its cost per image, its reward (the spec's
    weighted sum), each reward term and the judge's record (None without a judge)."""

    method: str
    label: str
    image: torch.Tensor
    cost: Cost
    reward: float = math.nan
    terms: dict = field(default_factory=dict)
    judged: Optional[dict] = None

    def to_dict(self) -> dict:
        return {"method": self.method, "label": self.label, "seconds_per_image": self.cost.seconds_per_image,
                "nfe_per_image": self.cost.nfe_per_image, "reward": self.reward, "terms": self.terms,
                "judge": self.judged}


@dataclass
class Comparison:
    """What ``compare`` returns: the checked request, the generator steps it ran (the request's, or
    the generator's default), the reward spec and one column per method."""

    request: Request
    steps: int
    reward_spec: str
    columns: list

    def column(self, method: str) -> Optional[Column]:
        return next((c for c in self.columns if c.method == method), None)

    def grid(self):
        """A PIL image: the prompt on top, one labelled row per column (base over HyperNoise first)."""
        return labelled_grid([(c.label, [c.image]) for c in self.columns], [self.request.prompt], min_size=256)

    def to_dict(self) -> dict:
        r = self.request
        return {"prompt": r.prompt, "seed": r.seed, "steps": self.steps, "reward_spec": self.reward_spec,
                "columns": [c.to_dict() for c in self.columns]}


@contextlib.contextmanager
def device_lock(device) -> Iterator[None]:
    """One generation at a time per device, whichever page, API call or thread asks."""
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(str(torch.device(device)), threading.Lock())
    with lock:
        yield


def compare(demo: Demo, request: Request) -> Comparison:
    """Base and HyperNoise (and the optional ReNO-K / best-of-N) for one checked request, scored.
    Each column's time is its generation from the noise: the prompt is encoded once before (all
    columns share that cost, and the generator's prompt cache keeps it)."""
    request = check_request(demo, request)
    with device_lock(demo.generator.device):
        with torch.no_grad():
            demo.generator.encode([request.prompt])  # into the prompt cache: no column's time holds the encoding
        columns = [_generated(demo, request, base=True), _generated(demo, request, base=False)]
        columns += [_searched(demo, request, m) for m, on in (("reno", request.reno),
                                                              ("best-of-n", request.best_of_n)) if on]
        _score(demo, request.prompt, columns)
    return Comparison(request, request.steps or demo.generator.default_steps, demo.reward.spec(), columns)


def _generated(demo: Demo, request: Request, base: bool) -> Column:
    """g(x0) or g(x0 + f_phi(x0)) for the request's seed, as ``generate --compare`` makes it, timed."""
    passes = 0 if base else (demo.config.passes or demo.hypernet.passes)
    cost = Cost(generator_forward=float(demo.generator.nfe(request.steps)), hypernet_forward=float(passes))
    with measure(cost, demo.generator.device, 1):
        image = generate_images(demo.generator, [request.prompt], [request.seed], request.steps, demo.hypernet,
                                base=base, passes=demo.config.passes)[0]
    return Column("base" if base else "hypernoise", "base" if base else "HyperNoise", image, cost)


def _searched(demo: Demo, request: Request, method: str) -> Column:
    """ReNO-K or best-of-N from the seed's noise, against the demo's reward, on g alone."""
    noise = seeded_noise(demo.generator, request.seed)[0]
    config = RunConfig(num_steps=request.steps, n=request.budget, reno=RenoConfig(iters=request.budget),
                       seeds=[request.seed])
    with demo.hypernet.adapters_disabled():  # the LoRA hypernetwork lives in g's backbone
        out = METHODS.get(method).run(demo.generator, demo.reward, noise, [request.prompt], config)
    label = SEARCH_LABELS[method].format(k=request.budget)
    return Column(method, label, out.samples[0].detach().float().cpu(), out.cost)


def _score(demo: Demo, prompt: str, columns: list) -> None:
    """Each column's reward terms, weighted reward and judge record, in place."""
    images, prompts = [c.image for c in columns], [prompt] * len(columns)
    terms = score(images, prompts, demo.reward, len(images), demo.generator.device)
    judged = [None] * len(images) if demo.judge is None else demo.judge.evaluate_images(torch.stack(images), prompts)
    weights = dict(zip(demo.reward.names, demo.reward.weights))
    for i, column in enumerate(columns):
        column.terms = {name: values[i] for name, values in terms.items()}
        column.reward = sum(weights[name] * value for name, value in column.terms.items())
        column.judged = judged[i]
