"""FLUX-Schnell: a rectified-flow transformer distilled for 1-4 steps, run through ``FluxPipeline``.

Noise x0 is PACKED: [(H/16) (W/16), 4 C] for the real model (2x2 latent patches flattened into
tokens), the layout the FLUX transformer consumes and ``FluxPipeline(latents=...)`` expects, and the
one the reference code trains its hypernetwork on. Packing is a permutation, so packed Gaussian
noise is still N(0, I); ``unpack_noise`` gives the [C, H/8, W/8] view for inspection.

Sampling: flow-matching Euler over sigmas linspace(1, 1/N, N) (shifted as the scheduler config
says), the transformer called at t / 1000; latents are unpacked, unscaled (/ scaling + shift)
and decoded. The noise hypernetwork pass is the transformer at flow time 1.0 with no guidance
(FLUX-Schnell has no guidance embedding; a guidance-distilled FLUX gets the sampling guidance).

A user's pipeline call (``hypernoise.attach``) gives f_phi the prompt embeddings that call encodes
(its negative prompt, for true CFG, is not f_phi's business), the packed noise that
``FluxPipeline.prepare_latents`` draws at the call's size, and the call's guidance scale.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from hypernoise.generators.base import Conditioning
from hypernoise.devices import resolve_device, resolve_dtype
from hypernoise.generators.diffusers_common import DiffusersGenerator, load_pipeline
from hypernoise.generators.registry import GENERATORS, PIPELINES

NOISE_FLOW_TIME = 1.0


class FluxGenerator(DiffusersGenerator):
    """g(x0, c) = decode(unpack(flow-matching Euler from packed x0)). See the module docstring."""

    name = "flux-schnell"
    pipeline_class = "FluxPipeline"
    default_pretrained = "black-forest-labs/FLUX.1-schnell"
    backbone_attr = "transformer"
    final_projection = "proj_out"
    default_steps = 4

    def __init__(self, pipe, pretrained: str, height: Optional[int] = None, width: Optional[int] = None,
                 max_sequence_length: int = 512, guidance_scale: float = 3.5):
        super().__init__(pipe, pretrained, height, width)
        self.max_sequence_length = int(max_sequence_length)
        self.guidance_scale = float(guidance_scale)

    def default_size(self) -> int:
        return int(self.pipeline.default_sample_size) * int(self.pipeline.vae_scale_factor)

    def size_multiple(self) -> int:
        return 2 * int(self.pipeline.vae_scale_factor)  # VAE downsampling times the 2x2 packing

    def latent_shape_at(self, height: int, width: int) -> tuple:
        f = self.size_multiple()
        return ((height // f) * (width // f), int(self.net.config.in_channels))

    # ----------------------------------------------------------------- layout
    def unpack_noise(self, noise: torch.Tensor) -> torch.Tensor:
        """Packed [B, seq, 4C] -> [B, C, H/8, W/8]."""
        return self.pipeline._unpack_latents(noise, self.height, self.width, self.pipeline.vae_scale_factor)

    def _ids(self, device, dtype, text_length: int):
        f = int(self.pipeline.vae_scale_factor) * 2
        img_ids = self.pipeline._prepare_latent_image_ids(1, self.height // f, self.width // f, device, dtype)
        return torch.zeros(text_length, 3, device=device, dtype=dtype), img_ids

    # ----------------------------------------------------------------- the protocol
    def text_limits(self) -> list[tuple[str, int]]:
        return [("tokenizer", int(self.pipeline.tokenizer.model_max_length)), ("tokenizer_2", self.max_sequence_length)]

    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        return self._encode(prompts, prompt_2=None, device=self.device, max_sequence_length=self.max_sequence_length)

    def _encode(self, prompt, **options) -> Conditioning:
        embeds, pooled, _ = self.pipeline.encode_prompt(prompt, **options)
        return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}

    def _transformer(self, latents: torch.Tensor, cond: Conditioning, timestep: torch.Tensor, guidance):
        embeds = cond["prompt_embeds"]
        txt_ids, img_ids = self._ids(latents.device, embeds.dtype, embeds.shape[1])
        return self.net(hidden_states=latents, timestep=timestep, guidance=guidance,
                        pooled_projections=cond["pooled_prompt_embeds"], encoder_hidden_states=embeds,
                        txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0]

    def _guidance(self, batch: int, device) -> Optional[torch.Tensor]:
        if not self.net.config.guidance_embeds:
            return None
        return torch.full((batch,), self.guidance_scale, device=device, dtype=torch.float32)

    def _timesteps(self, steps: int, seq_len: int, device):
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

        scheduler = self.fresh_scheduler()
        cfg = scheduler.config
        sigmas = None if cfg.get("use_flow_sigmas") else np.linspace(1.0, 1 / steps, steps)
        mu = calculate_shift(seq_len, cfg.get("base_image_seq_len", 256), cfg.get("max_image_seq_len", 4096),
                             cfg.get("base_shift", 0.5), cfg.get("max_shift", 1.15))
        timesteps, _ = retrieve_timesteps(scheduler, steps, device, sigmas=sigmas, mu=mu)
        return scheduler, timesteps

    def generate(self, noise: torch.Tensor, cond: Conditioning, num_steps: Optional[int] = None,
                 rng=None) -> torch.Tensor:
        """Mirrors ``FluxPipeline.__call__`` (steps 4-6 and decode) without true CFG; deterministic,
        so ``rng`` is unused (accepted for the common signature)."""
        latents = noise.to(cond["prompt_embeds"].dtype)
        scheduler, timesteps = self._timesteps(self.resolve_steps(num_steps), latents.shape[1], noise.device)
        guidance = self._guidance(latents.shape[0], noise.device)
        for t in timesteps:
            timestep = t.expand(latents.shape[0]).to(latents.dtype)
            velocity = self._transformer(latents, cond, timestep / 1000, guidance)
            latents = scheduler.step(velocity, t, latents, return_dict=False)[0]
        latents = self.unpack_noise(latents)
        return self.decode(latents / self.vae.config.scaling_factor + self.vae.config.shift_factor)

    def backbone_delta(self, noise: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        timestep = torch.full((noise.shape[0],), NOISE_FLOW_TIME, device=noise.device, dtype=self.dtype)
        return self._transformer(noise.to(self.dtype), cond, timestep, self._guidance(noise.shape[0], noise.device))

    # ----------------------------------------------------------------- a user's pipeline call
    def call_size(self, call: dict) -> tuple[int, int]:
        """The call's size, rounded down to the packing multiple as ``FluxPipeline.prepare_latents`` does."""
        f, (height, width) = self.size_multiple(), super().call_size(call)
        return f * (height // f), f * (width // f)

    def call_settings(self, call: dict) -> dict:
        return {**super().call_settings(call), "guidance_scale": float(call["guidance_scale"])}

    def call_conditioning(self, call: dict) -> Conditioning:
        scale = (call["joint_attention_kwargs"] or {}).get("scale")
        return self._encode(call["prompt"], prompt_2=call["prompt_2"], prompt_embeds=call["prompt_embeds"],
                            pooled_prompt_embeds=call["pooled_prompt_embeds"], device=self.call_device,
                            num_images_per_prompt=call["num_images_per_prompt"],
                            max_sequence_length=call["max_sequence_length"], lora_scale=scale)

    def call_noise(self, call: dict, cond: Conditioning) -> torch.Tensor:
        """``FluxPipeline.prepare_latents`` as its ``__call__`` runs it: packed [rows, seq, 4C]."""
        embeds = cond["prompt_embeds"]
        latents, _ = self.pipeline.prepare_latents(embeds.shape[0], self.latent_shape[1] // 4, self.height, self.width,
                                                   embeds.dtype, self.call_device, call["generator"], call["latents"])
        return latents


@GENERATORS.register("flux-schnell", help="FLUX.1-schnell (transformer, flow matching, 4 steps) through diffusers")
def build_flux_schnell(pretrained: Optional[str] = None, device=None, dtype=None, height: Optional[int] = None,
                       width: Optional[int] = None, max_sequence_length: int = 512, guidance_scale: float = 3.5,
                       **_) -> FluxGenerator:
    device = resolve_device(device)
    pretrained = pretrained or FluxGenerator.default_pretrained
    pipe = load_pipeline(FluxGenerator.pipeline_class, pretrained, resolve_dtype(dtype, device), device)
    return FluxGenerator(pipe, pretrained, height, width, max_sequence_length, guidance_scale)


PIPELINES.register(FluxGenerator.pipeline_class, help="FLUX-Schnell")(FluxGenerator.from_pipeline)
