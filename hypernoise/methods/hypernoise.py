"""HyperNoise: the noise hypernetwork, trained once for a frozen generator, then one extra forward
pass per image.

    HyperNoiseTask      L = objective(x0, f_phi(x0, c), r(g(x0 + f_phi(x0, c), c), c)), g frozen
    train_hypernetwork  train it and write ``out_dir/adapter`` (``methods.train.train``)
    run_hypernoise      the registered method: images g(x0 + f_phi(x0, c), c) and their cost

Configs: ``ModelConfig`` (which generator), ``HyperNoiseConfig`` (a whole training run; typed
defaults per generator in ``hypernoise.presets``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import torch
from torch import nn

from hypernoise.adapter import load_adapter
from hypernoise.devices import parse_dtype
from hypernoise.generators import Generator, build_generator
from hypernoise.hypernet import LoRAHypernetwork, LoraSettings, MLPHypernetwork, NoiseHypernetwork, check_passes
from hypernoise.lipschitz import spectral_norm, theorem1_bound
from hypernoise.lora import adapter_state_checkpoint
from hypernoise.methods.base import Cost, MethodOutput, RunConfig, measure, register_method, sample
from hypernoise.methods.train import TRAINING, train
from hypernoise.objective import NoiseObjective, ObjectiveConfig
from hypernoise.rewards import build_reward
from hypernoise.training import TrainConfig, TrainResult, TrainTask
from hypernoise.training.config import check_int, check_number


@dataclass
class ModelConfig:
    """Which frozen generator, from which weights, on which device."""

    generator: str = field(default="shapes", metadata={"help": "registry name, or auto (detect from --pretrained)"})
    pretrained: Optional[str] = field(default=None, metadata={"help": "hub id or local folder of the weights"})
    device: Optional[str] = field(default=None, metadata={"help": "torch device (default: cuda if available, else cpu)"})
    dtype: Optional[str] = field(default=None, metadata={"help": "float32, bfloat16 or float16 (default per device)"})
    height: Optional[int] = field(default=None, metadata={"help": "image height (default: the model's)"})
    width: Optional[int] = field(default=None, metadata={"help": "image width (default: the model's)"})
    prompt_cache_mb: Optional[float] = field(default=None, metadata={
        "help": "bound of the prompt-conditioning cache in MB, least recently used dropped (default 1024; 0: none)"})
    max_sequence_length: Optional[int] = field(default=None, metadata={
        "help": "text tokens the prompt is padded / cut to (SANA-Sprint's Gemma, FLUX's T5; default: the "
                "generator's, 300 and 512)"})
    guidance_scale: Optional[float] = field(default=None, metadata={
        "help": "the guidance input of generation (SANA-Sprint, default 4.5; a guidance-distilled FLUX)"})
    text_dtype_sampling: Optional[bool] = field(default=None, metadata={
        "help": "SANA-Sprint: run the sampler's timestep and model input in the text embeddings' dtype, as the "
                "authors' sampler does (bf16 in their runs); default: float32, as diffusers' pipeline"})

    def __post_init__(self):
        for name in ("height", "width"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name, 1, 8192)
        if self.prompt_cache_mb is not None:
            check_number(self.prompt_cache_mb, "prompt_cache_mb", 0.0, strict=False)
        if self.max_sequence_length is not None:
            check_int(self.max_sequence_length, "max_sequence_length")
        if self.guidance_scale is not None:
            check_number(self.guidance_scale, "guidance_scale", 0.0, strict=False)

    def generator_options(self) -> dict:
        """The family options given (size, text length, guidance, sampler casts), as ``build_generator`` takes them."""
        names = ("height", "width", "max_sequence_length", "guidance_scale", "text_dtype_sampling")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    def torch_dtype(self) -> Optional[torch.dtype]:
        return parse_dtype(self.dtype, field="model.dtype")

    def build(self) -> Generator:
        generator = build_generator(self.generator, pretrained=self.pretrained, device=self.device,
                                    dtype=self.torch_dtype(), **self.generator_options())
        return generator if self.prompt_cache_mb is None else generator.set_prompt_cache(self.prompt_cache_mb)


@dataclass
class HyperNoiseConfig:
    """Everything that defines a training run besides the prompts (HyperNoise, or direct
    fine-tuning, which ignores the objective and ``passes``)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    preset: str = field(default="default", metadata={"help": "the preset these settings started from (recorded)"})
    reward: Optional[str] = field(default=None, metadata={"help": "reward spec; default: the generator's"})
    reward_weights: dict = field(default_factory=dict, metadata={"help": "per-reward builder options, e.g. {'hps': {'pretrained': DIR}}"})
    reward_dtype: Optional[str] = field(default=None, metadata={
        "help": "dtype of the reward models (default: float32; the authors run them in the training dtype)"})
    lora: LoraSettings = field(default_factory=LoraSettings)
    mlp_hidden: int = field(default=128, metadata={"help": "width of the MLP hypernetwork (backbone-less generators)"})
    passes: int = field(default=1, metadata={
        "help": "K, times the map x <- x + f_phi(x, c) is applied in training and by default at inference (1: the paper)"})
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        check_passes(self.passes)
        check_int(self.mlp_hidden, "mlp_hidden")


def build_hypernetwork(generator: Generator, cfg: HyperNoiseConfig) -> NoiseHypernetwork:
    """LoRA on the generator's backbone when it has one, else the standalone MLP."""
    if generator.backbone is not None:
        return LoRAHypernetwork(generator, cfg.lora, passes=cfg.passes)
    return MLPHypernetwork(generator.latent_shape, hidden=cfg.mlp_hidden, passes=cfg.passes).to(generator.device)


def build_training_reward(cfg: HyperNoiseConfig, generator: Generator) -> nn.Module:
    """The reward a run trains against: ``cfg.reward``, else the generator's default."""
    return build_reward(cfg.reward or generator.default_reward, device=str(generator.device),
                        dtype=parse_dtype(cfg.reward_dtype, field="reward_dtype"), per_reward=cfg.reward_weights)


class HyperNoiseTask(TrainTask):
    """L = objective(x0, f_phi(x0, c), r(g(x0 + f_phi(x0, c), c), c)), g frozen."""

    def __init__(self, generator: Generator, hypernet: NoiseHypernetwork, reward: nn.Module,
                 objective: NoiseObjective, num_steps: Optional[int] = None):
        super().__init__()
        self.generator, self.hypernet, self.reward = generator, hypernet, reward
        self.objective = objective
        self.num_steps = num_steps
        self.latent_shape = tuple(generator.latent_shape)
        self.noise_dtype = generator.dtype

    @property
    def adapter(self) -> NoiseHypernetwork:
        return self.hypernet

    def forward(self, noise: torch.Tensor, prompts: Sequence[str]) -> dict[str, torch.Tensor]:
        cond = self.generator.encode(prompts)
        if self.objective.config.needs_input_grad:
            noise = noise.detach().requires_grad_(True)
        out = sample(self.generator, self.hypernet, noise, cond, num_steps=self.num_steps)
        reward = self.reward(out.images, prompts)
        terms = self.objective(noise, out.delta, reward)
        for name, value in getattr(self.reward, "last_terms", {}).items():
            terms[f"reward/{name}"] = torch.as_tensor(value)
        return terms

    def trainable_parameters(self) -> list[nn.Parameter]:
        return self.hypernet.trainable_parameters()

    def set_step(self, step: int) -> None:
        self.objective.step = step

    def reinitialize(self, seed: int) -> None:
        self.hypernet.reinitialize(seed)

    def enable_gradient_checkpointing(self) -> None:
        self.generator.enable_gradient_checkpointing(adapter_state_checkpoint)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        return self.hypernet.trainable_state_dict()

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.hypernet.load_trainable_state_dict(state)

    def run_settings(self, cfg: HyperNoiseConfig) -> dict:
        return {"method": "hypernoise", **({"preset": cfg.preset} if cfg.preset != "default" else {}),
                "reward": self.reward.spec(), "objective": asdict(cfg.objective),
                "train": cfg.train.to_dict(), "num_steps": cfg.train.num_steps or self.generator.default_steps}

    def diagnostics(self, noise: torch.Tensor, prompts: Sequence[str], iters: int) -> dict[str, float]:
        """Spectral norm of J_f on this batch (max and mean over samples)."""
        cond = self.generator.encode(prompts)
        sigma = spectral_norm(lambda x: self.hypernet.displacement(x, cond).to(x.dtype), noise, iters=iters)
        lip = float(sigma.max())
        dim = int(noise[0].numel())
        return {"lipschitz/max": lip, "lipschitz/mean": float(sigma.mean()), "lipschitz/theorem1_bound": theorem1_bound(lip, dim)}


@TRAINING.register("hypernoise", help="a noise hypernetwork: reward minus the noise-space KL penalty")
def build_task(cfg: HyperNoiseConfig, generator: Optional[Generator] = None) -> HyperNoiseTask:
    """The HyperNoise task of ``cfg`` (the LoRA / MLP initialisation drawn from ``cfg.train.seed``)."""
    generator = generator or cfg.model.build()
    reward = build_training_reward(cfg, generator)
    torch.manual_seed(cfg.train.seed)  # LoRA A / MLP initialisation
    hypernet = build_hypernetwork(generator, cfg)
    return HyperNoiseTask(generator, hypernet, reward, NoiseObjective(cfg.objective), cfg.train.num_steps)


def run_settings(cfg: HyperNoiseConfig, task: HyperNoiseTask) -> dict:
    """The settings recorded in the adapter's hypernoise.json."""
    return task.run_settings(cfg)


def train_hypernetwork(cfg: HyperNoiseConfig, prompts: Sequence[str], out_dir, resume: Optional[str] = None,
                       task: Optional[HyperNoiseTask] = None) -> tuple[HyperNoiseTask, TrainResult]:
    """Train, then write ``out_dir/adapter`` (main process). Returns the task and the result."""
    return train(cfg, prompts, out_dir, resume, method="hypernoise", task=task)


@register_method("hypernoise", help="g(x0 + f_phi(x0, c)) with a trained noise hypernetwork",
                 load_adapter=load_adapter)
@torch.no_grad()
def run_hypernoise(generator: Generator, reward: nn.Module, noise: torch.Tensor, prompts: Sequence[str],
                   config: RunConfig) -> MethodOutput:
    """Images from the modulated noise; each pass of the map is one hypernetwork forward."""
    hyper = config.adapter
    passes = config.passes or hyper.passes
    cost = Cost(generator_forward=float(generator.nfe(config.num_steps)), hypernet_forward=float(passes))
    with measure(cost, noise.device, len(prompts)):
        out = sample(generator, hyper, noise, generator.encode(prompts), passes=passes, num_steps=config.num_steps)
    return MethodOutput(out.images, cost, noise=out.noise)
