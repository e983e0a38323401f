"""SANA-Sprint: a linear-attention transformer distilled with sCM, run through ``SanaSprintPipeline``.

Noise x0: [C, H/32, W/32] (the unit Gaussian the pipeline multiplies by the scheduler's
``sigma_data``). The transformer is conditioned on Gemma-2 prompt embeddings (no "complex human
instruction", as the reference code encodes prompts) and a guidance embedding of
``guidance_scale x guidance_embeds_scale``. Sampling follows the SCM (TrigFlow) schedule from
t = pi/2; with several steps the scheduler re-noises between steps with fresh Gaussian noise,
drawn from ``rng`` when one is given.

The noise hypernetwork pass is the transformer on the raw noise at flow time 1.0 with guidance
4.5 x ``guidance_embeds_scale``, exactly as the reference code runs it (METHOD.md).

A user's pipeline call (``hypernoise.attach``) gives f_phi the prompt embeddings that call
encodes and the noise that ``prepare_latents`` draws at the call's size (after resolution
binning), before ``sigma_data``. ``SanaSprintPipeline.__call__`` adds its complex human
instruction unless it is passed as None, which is how this generator and the reference code
encode: ``call_defaults`` (recorded in every adapter) makes an attached call that does not name
``complex_human_instruction`` encode that way too.
"""

from __future__ import annotations

from typing import Optional

import torch

from hypernoise.generators.base import Conditioning
from hypernoise.devices import resolve_device, resolve_dtype
from hypernoise.generators.diffusers_common import DiffusersGenerator, load_pipeline
from hypernoise.generators.registry import GENERATORS, PIPELINES

GUIDANCE_SCALE = 4.5  # the pipeline's default, and the reference's hypernetwork guidance
MAX_TIMESTEP = 1.57080  # pi/2: pure noise in TrigFlow time (the pipeline's max_timesteps)
TWO_STEP_INTERMEDIATE = 1.3  # the pipeline's intermediate timestep, used only at 2 steps
NOISE_FLOW_TIME = 1.0


def _scm_input_scale(s: torch.Tensor) -> torch.Tensor:
    """sqrt(s^2 + (1 - s)^2): the TrigFlow -> flow-time input scaling of SANA-Sprint."""
    return torch.sqrt(s**2 + (1 - s) ** 2)


class SanaSprintGenerator(DiffusersGenerator):
    """g(x0, c) = decode(SCM sampling of the SANA transformer from x0 * sigma_data). See module docstring."""

    name = "sana-sprint"
    pipeline_class = "SanaSprintPipeline"
    default_pretrained = "Efficient-Large-Model/Sana_Sprint_1.6B_1024px_diffusers"
    backbone_attr = "transformer"
    final_projection = "proj_out"
    default_steps = 1
    #: prompts encoded without the pipeline's "complex human instruction", as the paper's code does
    call_defaults = {"complex_human_instruction": None}

    def __init__(self, pipe, pretrained: str, height: Optional[int] = None, width: Optional[int] = None,
                 max_sequence_length: int = 300, guidance_scale: float = GUIDANCE_SCALE,
                 text_dtype_sampling: bool = False):
        super().__init__(pipe, pretrained, height, width)
        self.max_sequence_length = int(max_sequence_length)
        self.guidance_scale = float(guidance_scale)
        #: cast the sampler's timestep and model input to the text dtype, as the authors' RewardSana
        #: (models/RewardSana.py:465, 475 @bbe3ab4); diffusers' pipeline keeps both in float32
        self.text_dtype_sampling = bool(text_dtype_sampling)

    def size_multiple(self) -> int:
        return 32  # SanaSprintPipeline.check_inputs

    def text_limits(self) -> list[tuple[str, int]]:
        return [("tokenizer", self.max_sequence_length)]

    def encode_prompts(self, prompts: list[str]) -> Conditioning:
        return self._encode(prompts, device=self.device, max_sequence_length=self.max_sequence_length,
                            **self.call_defaults)

    def _encode(self, prompt, **options) -> Conditioning:
        embeds, mask = self.pipeline.encode_prompt(prompt, **options)
        return {"prompt_embeds": embeds, "prompt_attention_mask": mask}

    def _guidance(self, batch: int, scale: float, dtype: torch.dtype, device) -> torch.Tensor:
        return torch.full((batch,), scale, device=device, dtype=dtype) * self.net.config.guidance_embeds_scale

    def _transformer(self, x: torch.Tensor, cond: Conditioning, timestep: torch.Tensor, guidance: torch.Tensor):
        return self.net(x.to(self.dtype), encoder_hidden_states=cond["prompt_embeds"].to(self.dtype),
                        encoder_attention_mask=cond["prompt_attention_mask"], guidance=guidance,
                        timestep=timestep, return_dict=False)[0]

    def generate(self, noise: torch.Tensor, cond: Conditioning, num_steps: Optional[int] = None,
                 rng=None) -> torch.Tensor:
        """Mirrors ``SanaSprintPipeline.__call__`` (steps 4-7 and decode) without resolution binning."""
        steps = self.resolve_steps(num_steps)
        scheduler = self.fresh_scheduler()
        scheduler.set_timesteps(steps, device=noise.device, max_timesteps=MAX_TIMESTEP,
                                intermediate_timesteps=TWO_STEP_INTERMEDIATE if steps == 2 else None)
        scheduler.set_begin_index(0)
        sigma_data = scheduler.config.sigma_data
        latents = noise.float() * sigma_data
        guidance = self._guidance(noise.shape[0], self.guidance_scale, cond["prompt_embeds"].dtype, noise.device)
        denoised = latents
        cast = cond["prompt_embeds"].dtype if self.text_dtype_sampling else None
        for t in scheduler.timesteps[:-1]:
            timestep = t.expand(noise.shape[0]).to(cast or t.dtype)
            s = torch.sin(timestep) / (torch.cos(timestep) + torch.sin(timestep))  # flow time of TrigFlow t
            s4 = s.view(-1, 1, 1, 1)
            x_in = latents / sigma_data * _scm_input_scale(s4)
            x_in = x_in.to(cast or x_in.dtype)
            out = self._transformer(x_in, cond, s, guidance)
            out = ((1 - 2 * s4) * x_in + (1 - 2 * s4 + 2 * s4**2) * out) / _scm_input_scale(s4)
            latents, denoised = scheduler.step(out.float() * sigma_data, timestep, latents, generator=rng,
                                               return_dict=False)
        # the pipeline casts to the VAE's dtype before unscaling; so do we, for bit-equal bf16 images
        return self.decode((denoised / sigma_data).to(self.vae.dtype) / self.vae.config.scaling_factor)

    def backbone_delta(self, noise: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        b = noise.shape[0]
        timestep = torch.full((b,), NOISE_FLOW_TIME, device=noise.device, dtype=self.dtype)
        guidance = self._guidance(b, GUIDANCE_SCALE, self.dtype, noise.device)
        return self._transformer(noise, cond, timestep, guidance)

    # ----------------------------------------------------------------- a user's pipeline call
    def call_size(self, call: dict) -> tuple[int, int]:
        """The call's size after ``SanaSprintPipeline.__call__``'s resolution binning (step 1); a
        backbone the bins do not fit is left to the pipeline, which refuses it."""
        from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import ASPECT_RATIO_1024_BIN

        height, width = int(call["height"]), int(call["width"])
        if call["use_resolution_binning"] and self.net.config.sample_size == 32:
            return self.pipeline.image_processor.classify_height_width_bin(height, width, ratios=ASPECT_RATIO_1024_BIN)
        return height, width

    def call_conditioning(self, call: dict) -> Conditioning:
        """Encoded as the call encodes, then repeated ``num_images_per_prompt`` times per prompt, the
        attention mask like the embeddings (``SanaSprintPipeline.encode_prompt`` repeats the mask
        in prompt-list order instead, so a list of prompts gets another prompt's mask)."""
        scale = (call["attention_kwargs"] or {}).get("scale")
        cond = self._encode(call["prompt"], num_images_per_prompt=1, device=self.call_device,
                            prompt_embeds=call["prompt_embeds"], prompt_attention_mask=call["prompt_attention_mask"],
                            clean_caption=call["clean_caption"], max_sequence_length=call["max_sequence_length"],
                            complex_human_instruction=call["complex_human_instruction"], lora_scale=scale)
        return {k: v.repeat_interleave(int(call["num_images_per_prompt"] or 1), dim=0) for k, v in cond.items()}

    def call_arguments(self, call: dict, cond: Conditioning) -> dict:
        """The call's prompts as the embeddings f_phi saw (encoded once, the mask in the right order)."""
        return {"prompt": None, "prompt_embeds": cond["prompt_embeds"],
                "prompt_attention_mask": cond["prompt_attention_mask"], "num_images_per_prompt": 1}

    def call_noise(self, call: dict, cond: Conditioning) -> torch.Tensor:
        """``SanaSprintPipeline.prepare_latents`` as its ``__call__`` runs it (float32, before ``sigma_data``)."""
        rows = cond["prompt_embeds"].shape[0]
        return self.pipeline.prepare_latents(rows, self.latent_shape[0], self.height, self.width, torch.float32,
                                             self.call_device, call["generator"], call["latents"])


@GENERATORS.register("sana-sprint", help="SANA-Sprint (transformer, SCM, 1-4 steps, 1024 px) through diffusers")
def build_sana_sprint(pretrained: Optional[str] = None, device=None, dtype=None, height: Optional[int] = None,
                      width: Optional[int] = None, max_sequence_length: int = 300,
                      guidance_scale: float = GUIDANCE_SCALE, text_dtype_sampling: bool = False,
                      **_) -> SanaSprintGenerator:
    device = resolve_device(device)
    pretrained = pretrained or SanaSprintGenerator.default_pretrained
    pipe = load_pipeline(SanaSprintGenerator.pipeline_class, pretrained, resolve_dtype(dtype, device), device)
    return SanaSprintGenerator(pipe, pretrained, height, width, max_sequence_length, guidance_scale,
                               text_dtype_sampling)


PIPELINES.register(SanaSprintGenerator.pipeline_class, help="SANA-Sprint")(SanaSprintGenerator.from_pipeline)
