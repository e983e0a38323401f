"""SD-Turbo: a UNet distilled for 1-4 steps, run through diffusers' ``StableDiffusionPipeline``.

Noise x0: [4, H/8, W/8] (the unscaled Gaussian the pipeline multiplies by the scheduler's
``init_noise_sigma``). No classifier-free guidance (guidance scale 0, as SD-Turbo is sampled).
The noise hypernetwork pass is the UNet at timestep 999 on the raw noise (METHOD.md).

A user's pipeline call (``hypernoise.attach``) gives f_phi its prompt embeddings (classifier-free
guidance or not: f_phi sees the prompt, never the negative one) and the noise that
``StableDiffusionPipeline.prepare_latents`` draws, before its ``init_noise_sigma`` scaling.
"""

from __future__ import annotations

from typing import Optional

import torch

from hypernoise.generators.base import Conditioning
from hypernoise.devices import resolve_device, resolve_dtype
from hypernoise.generators.diffusers_common import DiffusersGenerator, load_pipeline
from hypernoise.generators.registry import GENERATORS, PIPELINES

#: UNet timestep of the hypernetwork pass: the "pure noise" end of SD's discrete schedule
NOISE_TIMESTEP = 999


class SDTurboGenerator(DiffusersGenerator):
    """g(x0, c) = decode(Euler sampling of the UNet from x0 * init_noise_sigma). See the module docstring."""

    name = "sd-turbo"
    pipeline_class = "StableDiffusionPipeline"
    default_pretrained = "stabilityai/sd-turbo"
    backbone_attr = "unet"
    final_projection = "conv_out"
    default_steps = 1

    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        embeds, _ = self.pipeline.encode_prompt(prompts, device=self.device, num_images_per_prompt=1,
                                                do_classifier_free_guidance=False)
        return {"prompt_embeds": embeds}

    def generate(self, noise: torch.Tensor, cond: Conditioning, num_steps: Optional[int] = None,
                 rng=None) -> torch.Tensor:
        """Mirrors ``StableDiffusionPipeline.__call__`` (steps 4-7 and decode) at guidance scale 0.

        ``rng`` goes to the scheduler's ``step`` as the pipeline's ``generator`` does; SD-Turbo's
        Euler scheduler draws nothing from it.
        """
        scheduler = self.fresh_scheduler()
        scheduler.set_timesteps(self.resolve_steps(num_steps), device=noise.device)
        step_kwargs = self.pipeline.prepare_extra_step_kwargs(rng, 0.0)  # generator / eta, where accepted
        embeds = cond["prompt_embeds"]
        latents = noise * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            model_input = scheduler.scale_model_input(latents, t)
            eps = self.net(model_input, t, encoder_hidden_states=embeds, return_dict=False)[0]
            latents = scheduler.step(eps, t, latents, **step_kwargs, return_dict=False)[0]
        return self.decode(latents / self.vae.config.scaling_factor)

    def backbone_delta(self, noise: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        t = torch.full((noise.shape[0],), NOISE_TIMESTEP, device=noise.device)
        x = noise.to(self.dtype)
        return self.net(x, t, encoder_hidden_states=cond["prompt_embeds"].to(self.dtype), return_dict=False)[0]

    # ----------------------------------------------------------------- a user's pipeline call
    def call_size(self, call: dict) -> tuple[int, int]:
        if not call["height"] or not call["width"]:  # StableDiffusionPipeline.__call__, step 0: both or neither
            return self.default_size(), self.default_size()
        return int(call["height"]), int(call["width"])

    def call_conditioning(self, call: dict) -> Conditioning:
        scale = (call["cross_attention_kwargs"] or {}).get("scale")
        embeds, _ = self.pipeline.encode_prompt(call["prompt"], self.call_device, call["num_images_per_prompt"], False,
                                                prompt_embeds=call["prompt_embeds"], lora_scale=scale,
                                                clip_skip=call["clip_skip"])
        return {"prompt_embeds": embeds}

    def call_noise(self, call: dict, cond: Conditioning) -> torch.Tensor:
        """Mirrors ``StableDiffusionPipeline.prepare_latents`` up to its ``init_noise_sigma``
        scaling, which the pipeline applies to ``latents=`` as well."""
        from diffusers.utils.torch_utils import randn_tensor

        if call["latents"] is not None:
            return call["latents"].to(self.call_device)
        rows, generator = cond["prompt_embeds"].shape[0], call["generator"]
        if isinstance(generator, list) and len(generator) != rows:
            raise ValueError(f"You have passed a list of generators of length {len(generator)}, but requested an "
                             f"effective batch size of {rows}. Make sure the batch size matches the length of the "
                             f"generators.")  # the pipeline's own message
        return randn_tensor((rows, *self.latent_shape), generator=generator, device=self.call_device,
                            dtype=cond["prompt_embeds"].dtype)


@GENERATORS.register("sd-turbo", help="SD-Turbo (UNet, 1 step, 512 px; stabilityai/sd-turbo) through diffusers")
def build_sd_turbo(pretrained: Optional[str] = None, device=None, dtype=None, height: Optional[int] = None,
                   width: Optional[int] = None, **_) -> SDTurboGenerator:
    device = resolve_device(device)
    pretrained = pretrained or SDTurboGenerator.default_pretrained
    pipe = load_pipeline(SDTurboGenerator.pipeline_class, pretrained, resolve_dtype(dtype, device), device,
                         safety_checker=None, requires_safety_checker=False)
    return SDTurboGenerator(pipe, pretrained, height, width)


PIPELINES.register(SDTurboGenerator.pipeline_class, help="SD-Turbo")(SDTurboGenerator.from_pipeline)
