"""Real-size cost of HyperNoise: the published architectures, random weights, measured here.

    OMP_NUM_THREADS=1 python benchmarks/realsize.py                        # this CPU, about 30 min
    python benchmarks/realsize.py --quick                                  # tiny configs, seconds (tests)
    python benchmarks/realsize.py --device cuda --dtype bf16 --out DIR/realsize_gpu.json   # gpu_check.sh

What is built. SD-Turbo's backbone and VAE (the SD 2.1 UNet and KL VAE, 512 px), SANA-Sprint
0.6B's transformer and DC-AE, and FLUX-Schnell's transformer and VAE, from the published configs
copied below (each cites the Hub file), with random weights: nothing is downloaded. The text
encoders (Gemma-2 2B, OpenCLIP-H, CLIP-L + T5-XXL) are not built: the conditioning is random
tensors of the shape they produce (training caches prompt conditioning, so no encoder runs in a
step; they do take memory where they stay loaded, see docs/performance.md). The ReNO reward
ensemble (HPSv2.1 x 5, ImageReward x 1, CLIP ViT-H-14 x 0.01, PickScore x 0.05) is built from
``hypernoise.rewards``' own classes at the real widths and depths; prompts go through a stand-in
tokenizer (token ids of the right length), and text features are cached as the library does.

What is measured. Each job runs in a fresh subprocess (one CPU thread unless ``--threads``);
its phases reset the peak before they start. Times are ``perf_counter`` (CUDA synchronised);
memory is the peak resident set size of the process on a CPU (``VmHWM`` after a reset, else
``ru_maxrss``: weights included) and ``torch.cuda.max_memory_allocated`` on a GPU.

- ``overhead``: the backbone forward, plain (a copy without LoRA) vs the LoRA attached and off
  through peft's own switch (the old path) vs bypassed (what ``adapters_disabled`` does now);
  paired ratios per round, median over rounds.
- ``inference``: backbone forwards plain / off / on / merged for LoRA rank 128 and 8 and the
  LoRA's share of the FLOPs (``FlopCounterMode``); generation base vs HyperNoise (rank 128, 8,
  merged) with the VAE decode timed apart, against the floor (steps + 1) / steps.
- ``train``: one HyperNoise training step (f_phi forward, g, the reward, backward, AdamW step)
  with and without gradient checkpointing of the backbone and the reward towers.
- ``reward``: the reward ensemble alone, forward + backward on 512 px images.
- ``max-batch`` (GPU plan): training steps at batch 1, 2, 4, ... until out of memory.

Prints markdown tables and writes every number to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

GIB = 2**30
RESULTS = Path(__file__).resolve().parent / "results"

# --------------------------------------------------------------------------- published configs
#: Efficient-Large-Model/Sana_Sprint_0.6B_1024px_diffusers, transformer/config.json: the values
#: diffusers' scripts/convert_sana_to_diffusers.py writes for model type SanaSprint_600M_P1_D28
#: (heads 36 x 32, 28 layers, cross-attention 16 x 72 = 1152, Gemma-2 2B captions 2304, qk RMS
#: norm, guidance embedding, sample_size 1024 / 32).
SANA_SPRINT_06B = dict(in_channels=32, out_channels=32, num_attention_heads=36, attention_head_dim=32, num_layers=28,
                       num_cross_attention_heads=16, cross_attention_head_dim=72, cross_attention_dim=1152,
                       caption_channels=2304, mlp_ratio=2.5, attention_bias=False, sample_size=32, patch_size=1,
                       norm_elementwise_affine=False, norm_eps=1e-6, interpolation_scale=None,
                       qk_norm="rms_norm_across_heads", guidance_embeds=True, guidance_embeds_scale=0.1,
                       timestep_scale=1.0)
#: the same repository's vae/config.json: DC-AE f32c32 (mit-han-lab/dc-ae-f32c32-sana-1.1-diffusers)
SANA_DC_AE = dict(in_channels=3, latent_channels=32, attention_head_dim=32,
                  encoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
                  decoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
                  encoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
                  decoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
                  encoder_layers_per_block=(2, 2, 2, 3, 3, 3), decoder_layers_per_block=(3, 3, 3, 3, 3, 3),
                  encoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
                  decoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
                  upsample_block_type="interpolate", downsample_block_type="Conv", decoder_norm_types="rms_norm",
                  decoder_act_fns="silu", scaling_factor=0.41407)
#: scheduler/scheduler_config.json (SCMScheduler; the conversion script's values; max_timesteps 1.5708 and
#: intermediate_timesteps 1.3 are sampling arguments, which the generator passes)
SANA_SCM = dict(num_train_timesteps=1000, prediction_type="trigflow", sigma_data=0.5)

#: stabilityai/sd-turbo, unet/config.json: the SD 2.1 UNet (768-wide OpenCLIP-H text: 1024) at sample size 64
SD_TURBO_UNET = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                     block_out_channels=(320, 640, 1280, 1280), attention_head_dim=(5, 10, 20, 20),
                     cross_attention_dim=1024, use_linear_projection=True, norm_num_groups=32, norm_eps=1e-5,
                     act_fn="silu", flip_sin_to_cos=True, freq_shift=0, downsample_padding=1,
                     down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                     up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
#: stabilityai/sd-turbo, vae/config.json: SD's KL VAE (f8, 4 latent channels)
SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
              layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, sample_size=768, scaling_factor=0.18215)
#: stabilityai/sd-turbo, scheduler/scheduler_config.json (EulerDiscreteScheduler, trailing spacing)
SD_EULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="trailing",
                steps_offset=1, prediction_type="epsilon")

#: black-forest-labs/FLUX.1-schnell, transformer/config.json (diffusers' FluxTransformer2DModel defaults)
FLUX_SCHNELL = dict(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
                    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
                    guidance_embeds=False, axes_dims_rope=(16, 56, 56))
#: black-forest-labs/FLUX.1-schnell, vae/config.json (16 latent channels, no quant convs)
FLUX_VAE = dict(in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
                layers_per_block=2, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, sample_size=1024,
                scaling_factor=0.3611, shift_factor=0.1159, use_quant_conv=False, use_post_quant_conv=False)
#: black-forest-labs/FLUX.1-schnell, scheduler/scheduler_config.json
FLUX_EULER = dict(shift=1.0, use_dynamic_shifting=False, base_image_seq_len=256, max_image_seq_len=4096,
                  base_shift=0.5, max_shift=1.15)

#: open_clip ViT-H-14 (HPSv2.1) = laion/CLIP-ViT-H-14-laion2B-s32B-b79K and yuvalkirstain/PickScore_v1
#: config.json: vision 1280 wide, 32 layers, 16 heads, patch 14, 224 px; text 1024, 24 layers, 16 heads,
#: context 77, vocabulary 49408; projection 1024; GELU (hypernoise.rewards.clip.CLIP_ARCHITECTURES)
VIT_H_14 = dict(
    text_config=dict(vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                     num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5,
                     bos_token_id=49406, eos_token_id=49407, pad_token_id=1),
    vision_config=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16,
                       image_size=224, patch_size=14, hidden_act="gelu", layer_norm_eps=1e-5),
    projection_dim=1024)
#: ImageReward v1.0 (THUDM/ImageReward, ImageReward.pt + med_config.json): BLIP ViT-L/16 at 224 px
#: (1024 wide, 24 layers, 16 heads, eps 1e-6) and BERT-base with cross-attention to it (768, 12
#: layers, 12 heads, vocabulary 30524, eps 1e-12), head 768-1024-128-64-16-1 (rewards/imagereward.py)
BLIP_VIT_L = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                  image_size=224, patch_size=16, layer_norm_eps=1e-6, hidden_act="gelu")
BLIP_BERT = dict(vocab_size=30524, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=512, encoder_hidden_size=1024, is_decoder=True,
                 layer_norm_eps=1e-12, hidden_act="gelu", pad_token_id=0, bos_token_id=30522, sep_token_id=None)
IR_HEAD = (768, 1024, 128, 64, 16, 1)
#: the reno preset: hps:5, imagereward:1, clip:0.01, pickscore:0.05
RENO = (("hps", 5.0), ("imagereward", 1.0), ("clip", 0.01), ("pickscore", 0.05))

# tiny stand-ins of the same classes, for --quick (hypernoise.generators.tiny's sizes)
TINY = {
    "sana": dict(in_channels=4, out_channels=4, num_layers=1, num_attention_heads=2, attention_head_dim=4,
                 num_cross_attention_heads=2, cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=8,
                 sample_size=16, qk_norm="rms_norm_across_heads", guidance_embeds=True),
    "dc_ae": dict(in_channels=3, latent_channels=4, attention_head_dim=2,
                  encoder_block_types=("ResBlock", "EfficientViTBlock"),
                  decoder_block_types=("ResBlock", "EfficientViTBlock"), encoder_block_out_channels=(8, 8),
                  decoder_block_out_channels=(8, 8), encoder_qkv_multiscales=((), (5,)),
                  decoder_qkv_multiscales=((), (5,)), encoder_layers_per_block=(1, 1),
                  decoder_layers_per_block=(1, 1), downsample_block_type="conv", upsample_block_type="interpolate",
                  decoder_norm_types="rms_norm", decoder_act_fns="silu", scaling_factor=0.41407),
    "unet": dict(block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
                 down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                 up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32, norm_num_groups=2,
                 attention_head_dim=2),
    "kl": dict(block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4,
               down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
               layers_per_block=1, norm_num_groups=2, sample_size=32),
    "flux": dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                 num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=(4, 4, 8),
                 guidance_embeds=False),
    "flux_kl": dict(block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=4,
                    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                    layers_per_block=1, norm_num_groups=2, sample_size=32, use_quant_conv=False,
                    use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035),
    "clip": dict(text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                                  num_attention_heads=4, max_position_embeddings=16, eos_token_id=63),
                 vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
                                    image_size=32, patch_size=8), projection_dim=16),
    "blip_vit": dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
                     image_size=32, patch_size=8),
    "blip_bert": dict(vocab_size=64, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                      num_attention_heads=4, max_position_embeddings=64, encoder_hidden_size=32, is_decoder=True,
                      bos_token_id=62, sep_token_id=None),
    "ir_head": (32, 16, 8, 8, 4, 1),
}

#: family -> text conditioning it is fed (sequence length of its text encoder; widths from the backbone config)
TEXT_LENGTH = {"sana-sprint": 300, "sd-turbo": 77, "flux-schnell": 256}
#: the LoRA of every measurement: the library's default targets (every Linear and non-grouped Conv2d)
RANKS = (128, 8)


# --------------------------------------------------------------------------- random weights
def fill_random(module: nn.Module, seed: int = 0) -> None:
    """Weights of realistic scale, in place: norm weights 1, biases 0, a scalar (CLIP's logit
    scale) log 100, every other tensor N(0, 1 / fan_in)."""
    gen = torch.Generator(device=next(module.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim == 0:
                p.fill_(math.log(100.0))
            elif name.endswith("bias"):
                p.zero_()
            elif p.ndim == 1 and name.endswith("weight"):
                p.fill_(1.0)
            else:
                fan_in = max(1, p.numel() // p.shape[0])
                p.normal_(0.0, fan_in ** -0.5, generator=gen)


def build_random(factory, dtype: torch.dtype, device) -> nn.Module:
    """``factory()`` with parameters allocated once in ``dtype`` on ``device`` and filled by
    ``fill_random`` (built on the meta device first: no default initialisation pass)."""
    from accelerate import init_empty_weights

    with init_empty_weights():  # parameters on meta, buffers real
        module = factory()
    for sub in module.modules():
        for name, p in list(sub._parameters.items()):
            if p is not None and p.is_meta:
                sub._parameters[name] = nn.Parameter(torch.empty(p.shape, dtype=dtype, device=device),
                                                     requires_grad=False)
    module.to(device=device)  # the buffers
    fill_random(module)
    return module.eval().requires_grad_(False)


# --------------------------------------------------------------------------- generators
class RandomText:
    """Stands in for a generator's text encoders: conditioning of the shape they produce, random."""

    text_shapes: dict = {}

    def text_limits(self) -> list:
        return []  # no tokenizer, nothing is truncated

    def encode_prompts(self, prompts: list) -> dict:
        out = {}
        for key, (shape, kind) in self.text_shapes.items():
            size = (len(prompts), *shape)
            out[key] = (torch.ones(size, dtype=torch.long, device=self.device) if kind == "mask"
                        else torch.randn(size, device=self.device).to(self.dtype))
        return out


def _family_parts(family: str, quick: bool):
    """(backbone class, config, VAE class, config, scheduler, pipeline class, generator class, text shapes)."""
    import diffusers

    from hypernoise.generators.flux import FluxGenerator
    from hypernoise.generators.sana_sprint import SanaSprintGenerator
    from hypernoise.generators.sd_turbo import SDTurboGenerator

    length = 16 if quick else TEXT_LENGTH[family]
    if family == "sana-sprint":
        net = TINY["sana"] if quick else SANA_SPRINT_06B
        return (diffusers.SanaTransformer2DModel, net, diffusers.AutoencoderDC, TINY["dc_ae"] if quick else SANA_DC_AE,
                diffusers.SCMScheduler(**SANA_SCM), diffusers.SanaSprintPipeline, SanaSprintGenerator,
                {"prompt_embeds": ((length, net["caption_channels"]), "float"),
                 "prompt_attention_mask": ((length,), "mask")}, {"max_sequence_length": length})
    if family == "sd-turbo":
        net = TINY["unet"] if quick else SD_TURBO_UNET
        return (diffusers.UNet2DConditionModel, net, diffusers.AutoencoderKL, TINY["kl"] if quick else SD_VAE,
                diffusers.EulerDiscreteScheduler(**SD_EULER), diffusers.StableDiffusionPipeline, SDTurboGenerator,
                {"prompt_embeds": ((length, net["cross_attention_dim"]), "float")}, {})
    net = TINY["flux"] if quick else FLUX_SCHNELL
    return (diffusers.FluxTransformer2DModel, net, diffusers.AutoencoderKL, TINY["flux_kl"] if quick else FLUX_VAE,
            diffusers.FlowMatchEulerDiscreteScheduler(**FLUX_EULER), diffusers.FluxPipeline, FluxGenerator,
            {"prompt_embeds": ((length, net["joint_attention_dim"]), "float"),
             "pooled_prompt_embeds": ((net["pooled_projection_dim"],), "float")}, {"max_sequence_length": length})


def build_generator(family: str, px: int, dtype: torch.dtype, device, quick: bool):
    """The library's generator of ``family`` around a pipeline of random real-size (or tiny) modules."""
    net_cls, net_cfg, vae_cls, vae_cfg, scheduler, pipe_cls, gen_cls, shapes, options = _family_parts(family, quick)
    net = build_random(lambda: net_cls(**net_cfg), dtype, device)
    vae = build_random(lambda: vae_cls(**vae_cfg), dtype, device)
    if family == "sana-sprint":
        pipe = pipe_cls(tokenizer=None, text_encoder=None, vae=vae, transformer=net, scheduler=scheduler)
    elif family == "sd-turbo":
        pipe = pipe_cls(vae=vae, text_encoder=None, tokenizer=None, unet=net, scheduler=scheduler, safety_checker=None,
                        feature_extractor=None, requires_safety_checker=False)
    else:
        pipe = pipe_cls(scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None, text_encoder_2=None,
                        tokenizer_2=None, transformer=net)
    cls = type(f"Random{gen_cls.__name__}", (RandomText, gen_cls), {"text_shapes": shapes})
    return cls(pipe, "random weights", px, px, **options).freeze()


# --------------------------------------------------------------------------- the ReNO ensemble
class StandInTokenizer:
    """Token ids of the right length for a reward's text tower (ids 1..vocab-2, end-of-text last).
    Text features are cached per prompt, so the ids do not change what a step costs."""

    def __init__(self, vocab_size: int, eos: int):
        self.vocab_size, self.eos = vocab_size, eos

    def __call__(self, prompts, padding=None, max_length=77, truncation=True, return_tensors="pt"):
        from transformers import BatchEncoding

        ids = torch.randint(1, self.vocab_size - 2, (len(prompts), max_length))
        ids[:, -1] = self.eos
        return BatchEncoding({"input_ids": ids, "attention_mask": torch.ones_like(ids)})


def _contrastive(name: str, quick: bool, dtype, device, fit: str, logit_scale: bool):
    from transformers import CLIPConfig, CLIPModel

    from hypernoise.rewards.clip import ContrastiveReward
    from hypernoise.rewards.preprocess import ImageTransform

    cfg = CLIPConfig(**(TINY["clip"] if quick else VIT_H_14))
    model = build_random(lambda: CLIPModel(cfg), dtype, device)
    tok = StandInTokenizer(cfg.text_config.vocab_size, cfg.text_config.eos_token_id)
    transform = ImageTransform(size=cfg.vision_config.image_size, fit=fit)
    reward = ContrastiveReward(model, tok, transform, use_logit_scale=logit_scale, name=name, source="random")
    return reward, model.vision_model.encoder.layers


def _imagereward(quick: bool, dtype, device):
    from transformers import BlipTextConfig, BlipTextModel, BlipVisionConfig, BlipVisionModel

    from hypernoise.rewards.aesthetic import MLPHead
    from hypernoise.rewards.imagereward import ImageReward
    from hypernoise.rewards.preprocess import ImageTransform

    vcfg = BlipVisionConfig(**(TINY["blip_vit"] if quick else BLIP_VIT_L))
    tcfg = BlipTextConfig(**(TINY["blip_bert"] if quick else BLIP_BERT))
    vision = build_random(lambda: BlipVisionModel(vcfg), dtype, device)
    text = build_random(lambda: BlipTextModel(tcfg, add_pooling_layer=False), dtype, device)
    head = build_random(lambda: MLPHead(TINY["ir_head"] if quick else IR_HEAD), dtype, device)
    tok = StandInTokenizer(tcfg.vocab_size, eos=tcfg.vocab_size - 1)
    reward = ImageReward(vision, text, head, tok, ImageTransform(size=vcfg.image_size, fit="crop"), source="random")
    return reward, vision.encoder.layers


def build_reno(dtype, device, quick: bool, checkpointing: bool):
    """The reno ensemble (hypernoise.rewards.WeightedReward) of random real-size models."""
    from hypernoise.rewards.base import WeightedReward
    from hypernoise.rewards.clip import finish

    parts = {"hps": lambda: _contrastive("hps", quick, dtype, device, "pad", False),
             "imagereward": lambda: _imagereward(quick, dtype, device),
             "clip": lambda: _contrastive("clip", quick, dtype, device, "crop", True),
             "pickscore": lambda: _contrastive("pickscore", quick, dtype, device, "crop", True)}
    members = []
    for name, _ in RENO:
        reward, layers = parts[name]()
        members.append(finish(reward, layers, device=device, dtype=dtype, gradient_checkpointing=checkpointing))
    return WeightedReward(members, [w for _, w in RENO])


def set_reward_checkpointing(reward, on: bool) -> None:
    """Wrap (or unwrap) every vision-tower layer of the ensemble's members in ``Checkpointed``."""
    from hypernoise.rewards.clip import Checkpointed, checkpoint_layers

    for member in getattr(reward, "rewards", []):
        tower = member.model.vision_model if hasattr(member, "model") else getattr(member, "vision", None)
        if tower is None:  # a reward without a model (redness)
            continue
        layers = tower.encoder.layers
        if on:
            checkpoint_layers(layers)
        else:
            for i, layer in enumerate(layers):
                if isinstance(layer, Checkpointed):
                    layers[i] = layer.layer


def nbytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


# --------------------------------------------------------------------------- timing and memory
def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def _vm(key: str):
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Peak:
    """Peak memory of a block in bytes: CUDA's max allocated, else the process's peak RSS (reset
    through /proc/self/clear_refs where Linux allows it, else ru_maxrss since the start)."""

    def __init__(self, device):
        self.device, self.bytes, self.start, self.method = torch.device(device), 0, 0, ""

    @property
    def above_start(self) -> int:
        """The peak above what was held when the block began (its activations and transients)."""
        return self.bytes - self.start

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = torch.cuda.memory_allocated(self.device)
            self.method = "torch.cuda.max_memory_allocated"
        else:
            _release_freed_memory()
            self.start = _vm("VmRSS") or 0
            try:
                Path("/proc/self/clear_refs").write_text("5")
                self.method = "VmHWM (peak RSS, reset before the phase)"
            except OSError:
                self.method = "ru_maxrss (peak RSS since the process started)"
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device)
        elif self.method.startswith("VmHWM"):
            self.bytes = _vm("VmHWM") or 0
        else:
            self.bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _release_freed_memory() -> None:
    """Give memory freed by earlier phases back to the OS (glibc keeps freed heap pages resident),
    so that the resident set at a phase's start is what that phase holds."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def out_of_memory(err: BaseException) -> bool:
    return isinstance(err, (MemoryError, getattr(torch.cuda, "OutOfMemoryError", MemoryError))) or \
        "out of memory" in str(err).lower()


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


# --------------------------------------------------------------------------- phases
def _prompts(n: int) -> list:
    return [f"a photo of thing {i}" for i in range(n)]


def _task(gen, reward, rank: int):
    from hypernoise.hypernet import LoRAHypernetwork, LoraSettings
    from hypernoise.methods.hypernoise import HyperNoiseTask
    from hypernoise.objective import NoiseObjective, ObjectiveConfig

    torch.manual_seed(0)
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=rank))
    task = HyperNoiseTask(gen, hyper, reward, NoiseObjective(ObjectiveConfig("l2", alpha=1.0)), None)
    opt = torch.optim.AdamW(task.trainable_parameters(), lr=1e-5)
    return task, hyper, opt


def _cache_text(reward, prompts: list) -> None:
    """Encode the prompts' text features once, as training does (cached per prompt)."""
    for member in getattr(reward, "rewards", []):
        if hasattr(member, "text_features"):
            with torch.no_grad():
                member.text_features(prompts)


def _step(task, opt, batch: int) -> None:
    noise, prompts = task.generator.sample_noise(batch, seed=batch), _prompts(batch)
    _cache_text(task.reward, prompts)
    task(noise, prompts)["loss"].backward()
    opt.step()
    opt.zero_grad(set_to_none=True)


def _set_checkpointing(task, reward, on: bool) -> None:
    if on:
        task.enable_gradient_checkpointing()
    else:
        task.generator.disable_gradient_checkpointing()
    set_reward_checkpointing(reward, on)


def _ensure_task(ctx) -> tuple:
    """The job's HyperNoise task (LoRA rank ``ctx["rank"]`` in the generator) and its optimizer,
    built at the first training phase (inference phases before it see the plain generator)."""
    if "task" not in ctx:
        ctx["task"], hyper, ctx["opt"] = _task(ctx["gen"], ctx["reward"], ctx["rank"])
        ctx["weights_gib"]["lora"] = sum(p.numel() * p.element_size() for p in hyper.trainable_parameters()) / GIB
    return ctx["task"], ctx["opt"], ctx["device"]


def phase_train(ctx, checkpointing: bool, batch: int = 1, repeats: int = 1) -> dict:
    """One HyperNoise training step (median of ``repeats`` after a warm-up when repeats > 1)."""
    task, opt, device = _ensure_task(ctx)
    _set_checkpointing(task, ctx["reward"], checkpointing)
    _cache_text(task.reward, _prompts(batch))
    if repeats > 1:
        _step(task, opt, batch)
    with Peak(device) as peak:
        times = [timed(lambda: _step(task, opt, batch), device) for _ in range(repeats)]
    return {"checkpointing": checkpointing, "batch": batch, "step_s": statistics.median(times),
            "peak_gib": peak.bytes / GIB, "above_start_gib": peak.above_start / GIB, "memory": peak.method,
            "timed_steps": repeats, "warm": repeats > 1}


def phase_max_batch(ctx, checkpointing: bool, limit: int, budget_s: float) -> dict:
    """Training steps at batch 1, 2, 4, ... until out of memory, ``limit`` or ``budget_s``."""
    task, opt, device = _ensure_task(ctx)
    _set_checkpointing(task, ctx["reward"], checkpointing)
    start, fits, tried, batch, stop = time.perf_counter(), [], [], 1, "limit"
    while batch <= limit:
        if time.perf_counter() - start > budget_s:
            stop = "time budget"
            break
        try:
            _cache_text(task.reward, _prompts(batch))
            with Peak(device) as peak:
                seconds = timed(lambda: _step(task, opt, batch), device)
            fits.append({"batch": batch, "step_s": seconds, "peak_gib": peak.bytes / GIB})
        except Exception as err:  # noqa: BLE001 (out of memory is the expected end)
            if not out_of_memory(err):
                raise
            opt.zero_grad(set_to_none=True)
            tried.append(batch)
            stop = "out of memory"
            break
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
        batch *= 2
    return {"checkpointing": checkpointing, "largest_batch": fits[-1]["batch"] if fits else 0, "stopped_by": stop,
            "batches": fits, "oom_at": tried[0] if tried else None}


def phase_reward(ctx, checkpointing: bool, batch: int = 1, px: int = 512, repeats: int = 1) -> dict:
    """The ensemble alone: forward + backward of the weighted sum on ``batch`` images of ``px``."""
    reward, device = ctx["reward"], ctx["device"]
    set_reward_checkpointing(reward, checkpointing)
    prompts = _prompts(batch)
    _cache_text(reward, prompts)

    def step():
        images = torch.rand(batch, 3, px, px, device=device, requires_grad=True)
        reward(images, prompts).sum().backward()

    if repeats > 1:
        step()
    with Peak(device) as peak:
        times = [timed(step, device) for _ in range(repeats)]
    return {"checkpointing": checkpointing, "batch": batch, "image_px": px, "step_s": statistics.median(times),
            "peak_gib": peak.bytes / GIB, "above_start_gib": peak.above_start / GIB, "memory": peak.method}


@contextlib.contextmanager
def _backbone(gen, module):
    """``gen`` running ``module`` as its backbone inside the context."""
    own = gen.net
    gen.net = module
    try:
        yield
    finally:
        gen.net = own


@contextlib.contextmanager
def _peft_switch_off(hyper):
    """The LoRA off through peft's own switch only (what ``adapters_disabled`` did before)."""
    layers = hyper.lora.layers
    for layer in layers:
        layer._disable_adapters = True
    try:
        yield
    finally:
        for layer in layers:
            layer._disable_adapters = False


@contextlib.contextmanager
def _peft_forward():
    """peft's own LoRA forward (``result + B(A(x)) * scaling``: three more output-sized tensors per
    layer) in place of the library's in-place accumulation (``lora.low_rank_add``), for comparison."""
    from hypernoise.lora import _fused_classes

    own = {cls: cls.forward for cls in _fused_classes().values()}
    for cls in own:
        cls.forward = cls.__mro__[1].forward
    try:
        yield
    finally:
        for cls, forward in own.items():
            cls.forward = forward


def _rounds(variants: dict, rounds: int, device, bar=None, warm: bool = True) -> dict:
    """Interleaved timings: each round runs every variant once (after one warm-up call each when
    ``warm``); per-variant medians and the median over rounds of each variant's ratio to the first
    (paired, so slow drift cancels)."""
    times = {name: [] for name in variants}
    if warm:
        for fn in variants.values():
            fn()
    for _ in range(rounds):
        for name, fn in variants.items():
            times[name].append(timed(fn, device))
        if bar is not None:
            bar.update(1)
    first = next(iter(variants))
    return {name: {"median_s": statistics.median(ts), "min_s": min(ts),
                   f"ratio_to_{first}": statistics.median(t / b for t, b in zip(ts, times[first])),
                   f"ratio_of_mins_to_{first}": min(ts) / min(times[first])}
            for name, ts in times.items()}


def _decode_fn(gen, batch: int, device):
    """The VAE decode of random latents of the generator's size (the last step of ``generate``)."""
    f = int(gen.pipeline.vae_scale_factor)
    latents = torch.randn(batch, int(gen.vae.config.latent_channels), gen.height // f, gen.width // f, device=device)
    return lambda: gen.decode(latents.to(gen.vae.dtype))


def lora_flops(counter, adapter: str) -> int:
    """FLOPs of the LoRA paths (modules ``lora_A.<adapter>``, ``lora_B.<adapter>``) counted by a
    ``FlopCounterMode``."""
    return sum(sum(ops.values()) for name, ops in counter.get_flop_counts().items()
               if name.endswith((f"lora_A.{adapter}", f"lora_B.{adapter}")))


def phase_inference(ctx, rounds: int, repeats: int) -> dict:
    """Backbone forwards and generation with LoRA rank 128 (off / on / merged) and rank 8 (off /
    on); the VAE decode apart. "off" (bypassed: the plain backbone's modules on the same weight
    tensors) is the plain reference: a separate copy of the backbone differs by where its tensors
    sit in memory, a few percent here (the ``overhead`` phase compares one). The FLOPs of one
    f_phi pass are counted once (rank 128); the LoRA's are linear in the rank."""
    from torch.utils.flop_counter import FlopCounterMode

    from hypernoise.lora import placed
    from hypernoise.methods import sample

    gen, device, noise, cond = ctx["gen"], ctx["device"], ctx["noise"], ctx["cond"]
    steps, big, small = gen.default_steps, RANKS[0], RANKS[1]
    hyper = _hypernetwork(gen, big)
    with torch.no_grad(), _peft_forward(), FlopCounterMode(display=False) as counter:
        hyper(noise, cond)  # peft's forward runs B's matmul inside lora_B, where the counter attributes it
    lora = lora_flops(counter, hyper.lora.adapter_name)
    out = {"steps": steps, "floor": (steps + 1) / steps, "flops_plain": counter.get_total_flops() - lora,
           "lora_flops": {str(big): lora, str(small): lora * small / big}, "merged_gib": hyper.merged_nbytes() / GIB,
           "lora_layers": len(hyper.lora.sites), "rounds": rounds, "repeats": repeats}

    def off(h, fn):
        return lambda: _call_with(h.adapters_disabled(), fn)

    def unmerged(h, fn):  # the peft layers back in place inside merged(): the unmerged f_phi
        return lambda: _call_with(placed(h.lora.sites, [site.layer for site in h.lora.sites]), fn)

    forward = lambda: gen.backbone_delta(noise, cond)  # noqa: E731  (f_phi when the LoRA is on)
    generate = lambda: gen.generate(noise, cond, steps)  # noqa: E731
    modulated = lambda h: lambda: sample(gen, h, noise, cond, num_steps=steps)  # noqa: E731
    total = 2 * rounds + (5 * repeats + 1 if repeats else 0)  # bar steps: one per round of each _rounds call
    warm = repeats > 1  # on a GPU every variant is warmed up; on a CPU one plain forward warms the kernels
    with torch.no_grad(), ctx["bar"](total=total, desc="inference") as bar:
        off(hyper, forward)()
        if repeats:
            out["decode"] = _rounds({"decode": _decode_fn(gen, noise.shape[0], device)}, repeats, device, bar, warm=warm)
        start = time.perf_counter()
        with hyper.merged():
            out["merge_s"] = time.perf_counter() - start
            if not warm:
                unmerged(hyper, forward)()  # the LoRA's own kernels
            peft = lambda: _call_with(_peft_forward(), unmerged(hyper, forward))  # noqa: E731
            out["forward"] = _rounds({"off": off(hyper, forward), "on": unmerged(hyper, forward), "merged": forward,
                                      "peft": peft}, rounds, device, bar, warm=warm)
            generation = {"base": off(hyper, generate), f"hypernoise_r{big}": unmerged(hyper, modulated(hyper)),
                          "merged": modulated(hyper)}
            if repeats:
                out["generation"] = _rounds(generation, repeats, device, bar, warm=warm)
        hyper.remove()
        hyper = _hypernetwork(gen, small)
        if not warm:
            forward()
        out[f"forward_r{small}"] = _rounds({"off": off(hyper, forward), "on": forward,
                                            "peft": lambda: _call_with(_peft_forward(), forward)},
                                           rounds, device, bar, warm=warm)
        if repeats:
            small_gen = _rounds({"g": modulated(hyper)}, repeats, device, bar, warm=warm)
            out["generation"][f"hypernoise_r{small}"] = small_gen["g"]
        hyper.remove()
    return out


def phase_forward(ctx, rounds: int) -> dict:
    """The backbone forwards of ``phase_inference`` alone (no decode, no generation), for more
    paired rounds in the same time."""
    return phase_inference(ctx, rounds, repeats=0)


def _layer_inputs(hyper, noise, cond) -> list:
    """One f_phi pass recording each adapted layer's input: [(layer, input, count)], one entry per
    distinct (base weight shape, input shape); the final projection (delta only) left out."""
    seen, hooks = {}, []

    def record(layer):
        def hook(_module, args):
            key = (tuple(layer.base_layer.weight.shape), tuple(args[0].shape))
            entry = seen.setdefault(key, [layer, args[0].clone(), 0])
            entry[2] += 1
        return hook

    for site in hyper.lora.sites:
        if site.layer is not hyper._final:
            hooks.append(site.layer.register_forward_pre_hook(record(site.layer)))
    try:
        hyper(noise, cond)
    finally:
        for h in hooks:
            h.remove()
    return list(seen.values())


def _calls(fn, device, at_least_s: float = 0.2) -> int:
    """How many calls of ``fn`` last ``at_least_s`` (one timing of that many is steady enough)."""
    return max(1, math.ceil(at_least_s / max(timed(fn, device), 1e-6)))


def phase_layers(ctx, rounds: int) -> dict:
    """Every distinct adapted layer of f_phi timed alone on the input it sees in a pass (rank 128
    and 8): the base layer, the library's LoRA layer (in-place accumulation) and peft's forward,
    in paired rounds. Summed over the pass's layers (each shape times its count) this is the LoRA's
    cost in the forward without the whole forward's run-to-run noise; its excess over the
    LoRA's FLOPs is the per-layer overhead."""
    from torch.utils.flop_counter import FlopCounterMode

    gen, device, noise, cond = ctx["gen"], ctx["device"], ctx["noise"], ctx["cond"]
    out = {"rounds": rounds}
    with torch.no_grad():
        for rank in RANKS:
            hyper = _hypernetwork(gen, rank)
            entries, shapes = _layer_inputs(hyper, noise, cond), []
            with ctx["bar"](total=len(entries), desc=f"layers r{rank}") as bar:
                for layer, x, count in entries:
                    with FlopCounterMode(display=False) as base_flops:
                        layer.base_layer(x)
                    with _peft_forward(), FlopCounterMode(display=False) as all_flops:
                        layer(x)
                    n = _calls(lambda: layer.base_layer(x), device)  # the same count for each variant
                    variants = {"base": lambda: _repeat(layer.base_layer, x, n),
                                "library": lambda: _repeat(layer, x, n),
                                "peft": lambda: _call_with(_peft_forward(), lambda: _repeat(layer, x, n))}
                    timing = _rounds(variants, rounds, device)
                    per_call = {name: timing[name]["median_s"] / n for name in timing}
                    shapes.append({"weight": list(layer.base_layer.weight.shape), "input": list(x.shape),
                                   "count": count, "lora_flop_share": all_flops.get_total_flops()
                                   / base_flops.get_total_flops() - 1, **{f"{k}_s": v for k, v in per_call.items()},
                                   **{f"{k}_ratio": timing[k]["ratio_to_base"] for k in ("library", "peft")}})
                    bar.update(1)
            hyper.remove()
            total = lambda key: sum(e["count"] * e[key] for e in shapes)  # noqa: E731
            base = total("base_s")
            out[str(rank)] = {"layers": sum(e["count"] for e in shapes), "shapes": shapes, "base_s": base,
                              "lora_flops_s": sum(e["count"] * e["base_s"] * e["lora_flop_share"] for e in shapes),
                              "library_extra_s": total("library_s") - base, "peft_extra_s": total("peft_s") - base}
        forward = lambda: gen.backbone_delta(noise, cond)  # noqa: E731  (the plain backbone: no LoRA now)
        out["plain_forward_s"] = _rounds({"plain": forward}, 3, device)["plain"]["median_s"]
    return out


def _repeat(module, x: torch.Tensor, n: int) -> None:
    """``n`` calls of ``module(x)``, each output dropped at once as in a pass (kept alive, every
    output would land in fresh, cold memory and the in-place add would read it from there)."""
    for _ in range(n):
        module(x)


def _call_with(context, fn):
    with context:
        fn()


def _hypernetwork(gen, rank: int):
    """A LoRA hypernetwork of ``rank`` with trained-looking weights (a non-zero delta)."""
    from hypernoise.hypernet import LoRAHypernetwork, LoraSettings

    torch.manual_seed(0)
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=rank))
    with torch.no_grad():
        for p in hyper.trainable_parameters():
            p.normal_(0, 1e-3)
    return hyper


def phase_overhead(ctx, rounds: int) -> dict:
    """Plain backbone (a copy without LoRA) vs the rank-128 LoRA attached and off: through peft's
    own switch (the old path) and bypassed (``adapters_disabled`` now)."""
    gen, device, noise, cond = ctx["gen"], ctx["device"], ctx["noise"], ctx["cond"]
    plain = copy.deepcopy(gen.net)
    hyper = _hypernetwork(gen, 128)

    def run_plain():
        with _backbone(gen, plain):
            gen.backbone_delta(noise, cond)

    def run_switch():
        with _peft_switch_off(hyper):
            gen.backbone_delta(noise, cond)

    def run_bypass():
        with hyper.adapters_disabled():
            gen.backbone_delta(noise, cond)

    variants = {"plain": run_plain, "off_peft_switch": run_switch, "off_bypass": run_bypass}
    with torch.no_grad(), ctx["bar"](total=rounds, desc="overhead rounds") as bar:
        out = {"rank": 128, "rounds": rounds, "lora_layers": len(hyper.lora.sites),
               **_rounds(variants, rounds, device, bar), **_per_call_costs(hyper, device)}
    hyper.remove()
    return out


def _per_call_costs(hyper, device) -> dict:
    """What each path adds per pass, timed directly (no backbone noise): entering and leaving
    ``adapters_disabled`` (the bypass), and peft's wrapper with its switch off around a Linear
    on a small input, per layer, times the number of LoRA layers (the old path)."""
    def medianed(fn, n):
        return statistics.median(timed(fn, device) for _ in range(n))

    def switch():
        with hyper.adapters_disabled():
            pass

    linear = next(site.layer for site in hyper.lora.sites if isinstance(site.layer.get_base_layer(), nn.Linear))
    base = linear.get_base_layer()
    x = torch.randn(1, base.in_features, device=device, dtype=base.weight.dtype)

    def wrapped():
        with _peft_switch_off(hyper):
            for _ in range(100):
                linear(x)

    def bare():
        for _ in range(100):
            base(x)

    per_layer = (medianed(wrapped, 21) - medianed(bare, 21)) / 100
    return {"bypass_switch_s": medianed(switch, 51), "peft_wrapper_per_layer_s": per_layer,
            "peft_wrappers_per_pass_s": per_layer * len(hyper.lora.sites)}


# --------------------------------------------------------------------------- jobs (one subprocess each)
PHASES = {"train": phase_train, "max-batch": phase_max_batch, "reward": phase_reward, "overhead": phase_overhead,
          "inference": phase_inference, "forward": phase_forward, "layers": phase_layers}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _context(job: dict, bar) -> dict:
    """What the job's phases share: the generator (and its inputs), the reward, the sizes."""
    device, dtype, quick = torch.device(job["device"]), DTYPES[job["dtype"]], job["quick"]
    ctx = {"device": device, "bar": bar, "quick": quick, "rank": job.get("rank", 128), "weights_gib": {},
           "process_gib": (_vm("VmRSS") or 0) / GIB}
    if job.get("reward") == "reno":
        ctx["reward"] = build_reno(DTYPES[job.get("reward_dtype") or job["dtype"]], device, quick, checkpointing=False)
        ctx["weights_gib"]["reward"] = nbytes(ctx["reward"]) / GIB
    elif job.get("reward"):
        from hypernoise.rewards import build_reward

        ctx["reward"] = build_reward(job["reward"])
    if job.get("model"):
        gen = build_generator(job["model"], job["px"], dtype, device, quick)
        ctx.update(gen=gen, noise=gen.sample_noise(1, seed=0), cond=gen.encode(_prompts(1)))
        ctx["weights_gib"].update(backbone=nbytes(gen.net) / GIB, vae=nbytes(gen.vae) / GIB)
    return ctx


def run_job(job: dict, out: Path) -> None:
    """Every phase of ``job`` in this process; one JSON line per phase appended to ``out`` as it
    ends (a phase that fails is recorded with its error; the others still run)."""
    from tqdm.auto import tqdm

    from hypernoise.allocator import tune

    tuned = tune()  # the CLI's CPU heap (hypernoise/allocator.py): what a user's run gets
    torch.set_num_threads(job["threads"])
    torch.set_flush_denormal(True)
    bar = lambda **kw: tqdm(leave=False, position=2, **kw)  # noqa: E731
    with tqdm(total=len(job["phases"]) + 1, desc=job["name"], leave=False, position=1) as phases:
        phases.set_postfix_str("building")
        start = time.perf_counter()
        ctx = _context(job, bar)
        build_s = time.perf_counter() - start
        phases.update(1)
        for kind, options in job["phases"]:
            phases.set_postfix_str(f"{kind} {options}")
            rec = {**{k: job.get(k) for k in ("name", "model", "px", "dtype", "reward", "reward_dtype", "device")},
                   "phase": kind, "options": options, "build_s": build_s, "process_gib": ctx["process_gib"],
                   "allocator_tuned": tuned}
            try:
                rec.update(PHASES[kind](ctx, **options))
            except Exception as err:  # noqa: BLE001 (one failed phase must not lose the others)
                rec["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:300] if str(err) else ''}"
                if ctx["device"].type == "cuda":
                    torch.cuda.empty_cache()
            rec["weights_gib"] = dict(ctx["weights_gib"])
            with open(out, "a") as f:
                f.write(json.dumps(rec) + "\n")
            phases.update(1)


def spawn(job: dict, timeout) -> list:
    """``job`` in a fresh Python process; its records (plus one for a timeout or a crash)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "records.jsonl"
        env = {**os.environ, "OMP_NUM_THREADS": str(job["threads"]), "MKL_NUM_THREADS": str(job["threads"]),
               "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--job", json.dumps(job), "--job-out", str(out)]
        try:
            code = subprocess.run(cmd, env=env, timeout=timeout).returncode
            why = None if code == 0 else f"the job's process exited with {code}" + (
                " (killed: out of memory?)" if code < 0 else "")
        except subprocess.TimeoutExpired:
            why = f"the job ran past its {timeout:.0f} s bound and was stopped"
        records = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    if why:
        records.append({"name": job["name"], "phase": "job", "error": why})
    return records


# --------------------------------------------------------------------------- plans
def _job(args, name: str, phases: list, *, model=None, px=None, dtype="fp32", reward=None, reward_dtype=None,
         timeout=None) -> dict:
    if px and args.quick:  # the tiny configs at 1/8 of the pixels per side (32 px at least: SANA's multiple)
        name, px = name.replace(f"{px}px", f"{max(32, px // 8)}px (tiny)"), max(32, px // 8)
    return {"name": name, "model": model, "px": px, "dtype": dtype, "reward": reward,
            "reward_dtype": reward_dtype, "phases": phases, "device": args.device, "threads": args.threads,
            "quick": args.quick, "timeout": timeout}


def _train_phases(repeats: int = 1) -> list:
    return [("train", {"checkpointing": True, "repeats": repeats}),
            ("train", {"checkpointing": False, "repeats": repeats})]


def _reward_phases(batches=(1,), repeats: int = 1) -> list:
    """Checkpointed first: a phase's peak then never sits on memory an earlier, larger one left."""
    return [("reward", {"checkpointing": c, "batch": b, "repeats": repeats}) for b in batches for c in (True, False)]


def cpu_plan(args) -> list:
    """This CPU, one thread: inference in fp32; training steps and the ensemble in fp32 and bf16."""
    plan = [_job(args, "overhead sana-sprint 64px fp32", [("overhead", {"rounds": 20})], model="sana-sprint", px=64)]
    for model in ("sana-sprint", "sd-turbo"):
        plan.append(_job(args, f"inference {model} 512px fp32", [("inference", {"rounds": 3, "repeats": 2})],
                         model=model, px=512))
    plan.append(_job(args, "forward sana-sprint 512px fp32", [("forward", {"rounds": 9})], model="sana-sprint", px=512))
    plan.append(_job(args, "layers sana-sprint 512px fp32", [("layers", {"rounds": 9})], model="sana-sprint", px=512))
    for model, px, dtype in (("sana-sprint", 512, "fp32"), ("sana-sprint", 512, "bf16"), ("sd-turbo", 512, "fp32"),
                             ("sana-sprint", 256, "fp32"), ("sana-sprint", 256, "bf16")):
        plan.append(_job(args, f"train {model} {px}px {dtype}", _train_phases(), model=model, px=px, dtype=dtype,
                         reward="redness"))
    plan.append(_job(args, "train sd-turbo 512px bf16", _train_phases()[:1], model="sd-turbo", px=512, dtype="bf16",
                     reward="redness"))
    for dtype in ("fp32", "bf16"):
        plan.append(_job(args, f"reward reno {dtype}", _reward_phases(), reward="reno", dtype=dtype))
    plan.append(_job(args, "train sana-sprint 256px bf16 + reno", [("train", {"checkpointing": True})],
                     model="sana-sprint", px=256, dtype="bf16", reward="reno"))
    return plan


def gpu_plan(args) -> list:
    """One GPU (gpu_check.sh): the paper's sizes with the full ensemble, the largest batch that
    fits, generation, the ensemble alone; the most wanted first (SANA-Sprint at 1024 px), every
    job bounded in time (the run's deadline cuts what is left)."""
    limit = 4 if args.quick else 64
    models = (("sana-sprint", 1024), ("sd-turbo", 512), ("flux-schnell", 512))
    plan = []
    for model, px in models:
        train = _train_phases(repeats=2) + [("max-batch", {"checkpointing": True, "limit": limit, "budget_s": 45.0})]
        plan.append(_job(args, f"train {model} {px}px {args.dtype} + reno", train, model=model, px=px,
                         dtype=args.dtype, reward="reno", timeout=150))
    for model, px in models:
        inference = ([("overhead", {"rounds": 10})] if model == "sana-sprint" else []) + \
            [("inference", {"rounds": 5, "repeats": 2})]
        plan.append(_job(args, f"inference {model} {px}px {args.dtype}", inference, model=model, px=px,
                         dtype=args.dtype, timeout=90))
    for dtype in ("bf16", "fp32"):
        plan.append(_job(args, f"reward reno {dtype}", _reward_phases((1, 8), repeats=2), reward="reno", dtype=dtype,
                         timeout=60))
    return plan


def run_plan(jobs: list, deadline_s) -> list:
    """Every job in its own process, in order; jobs that would start past ``deadline_s`` are skipped."""
    from tqdm.auto import tqdm

    start, records = time.monotonic(), []
    for job in tqdm(jobs, desc="realsize jobs", position=0):
        left = None if deadline_s is None else deadline_s - (time.monotonic() - start)
        if left is not None and left < 15:
            records.append({"name": job["name"], "phase": "job", "error": "skipped: the run's deadline was reached"})
            continue
        bounds = [b for b in (job.get("timeout"), left) if b is not None]
        records += spawn(job, min(bounds) if bounds else None)
    return records


# --------------------------------------------------------------------------- derived numbers
def _find(records, **want) -> list:
    def match(r):
        return "error" not in r and all((r.get(k) if k not in ("checkpointing", "batch") else r.get(k)) == v
                                        for k, v in want.items())
    return [r for r in records if match(r)]


def _one(records, **want):
    found = _find(records, **want)
    return found[0] if found else None


def memory_at_1024(records, scale: int = 1) -> dict:
    """Peak memory of a SANA-Sprint training step at 1024 px with the ReNO ensemble, from steps
    measured at 256 and 512 px (reward redness) and the ensemble measured alone.

    Method: the generator part's peak is fitted as a + b x pixels through the 256 and 512 px
    steps (a: weights, LoRA and optimizer state, the process; b: activations per pixel, which
    convolutions, linear attention and the VAE make proportional to the pixel count) and
    evaluated at 1024 px; the ensemble adds its weights and the peak of its own forward + backward
    above them, measured alone on a 512 px image (it reads 224 px crops whatever the image size).
    Checked against a step measured with the ensemble in it (``check``).
    """
    lo, hi, target = 256 // scale, 512 // scale, 1024 // scale
    out = {"method": memory_at_1024.__doc__.split("\n\n")[1].replace("\n    ", " ").strip(), "rows": []}
    for dtype in ("fp32", "bf16"):
        for ckpt in (False, True):
            want = dict(phase="train", model="sana-sprint", dtype=dtype, reward="redness", checkpointing=ckpt)
            a, b = _one(records, px=lo, **want), _one(records, px=hi, **want)
            if not (a and b):
                continue
            per_px = (b["peak_gib"] - a["peak_gib"]) / (hi ** 2 - lo ** 2)
            gen_1024 = b["peak_gib"] + per_px * (target ** 2 - hi ** 2)
            for reward_dtype in ("bf16", "fp32"):
                r = _one(records, phase="reward", reward="reno", dtype=reward_dtype, checkpointing=ckpt, batch=1)
                if r is None:
                    continue
                ensemble = r["weights_gib"]["reward"] + r["above_start_gib"]
                out["rows"].append({"dtype": dtype, "reward_dtype": reward_dtype, "checkpointing": ckpt,
                                    "generator_256_gib": a["peak_gib"], "generator_512_gib": b["peak_gib"],
                                    "generator_1024_gib": gen_1024, "activations_gib_per_mpx": per_px * 2**20,
                                    "ensemble_gib": ensemble, "total_512_gib": b["peak_gib"] + ensemble,
                                    "total_1024_gib": gen_1024 + ensemble})
    for direct in _find(records, phase="train", model="sana-sprint", reward="reno"):
        key = (direct["dtype"], direct.get("reward_dtype") or direct["dtype"], direct["checkpointing"])
        row = next((r for r in out["rows"] if (r["dtype"], r["reward_dtype"], r["checkpointing"]) == key), None)
        if row and direct["px"] in (lo, hi):
            parts = row["total_512_gib"] if direct["px"] == hi else row["generator_256_gib"] + row["ensemble_gib"]
            out["check"] = {"px": direct["px"] * scale, "measured_gib": direct["peak_gib"], "sum_of_parts_gib": parts,
                            "dtype": key[0], "reward_dtype": key[1], "checkpointing": key[2]}
    return out


# --------------------------------------------------------------------------- tables
def _f(x, digits=2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _options(r) -> str:
    return "on" if r.get("checkpointing") else "off"


def table_train(records) -> list:
    rows = [r for r in records if r.get("phase") == "train"]
    lines = ["| job | checkpointing | batch | step (s) | peak (GiB) | weights: backbone / VAE / LoRA / reward (GiB) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        w = r.get("weights_gib", {})
        parts = " / ".join(_f(w.get(k)) for k in ("backbone", "vae", "lora", "reward"))
        lines.append(f"| {r['name']} | {_options(r)} | {r.get('batch', '-')} | {_f(r.get('step_s'), 1)} | "
                     f"{_f(r.get('peak_gib'))} | {parts} |")
    return lines


def table_reward(records) -> list:
    rows = [r for r in records if r.get("phase") == "reward"]
    lines = ["| ensemble | checkpointing | batch | image | fwd + bwd (s) | weights (GiB) | peak above the weights "
             "(GiB) | weights + that (GiB) | process peak (GiB) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        w = r["weights_gib"].get("reward")
        lines.append(f"| {r['name']} | {_options(r)} | {r['batch']} | {r['image_px']} px | {_f(r['step_s'], 1)} | "
                     f"{_f(w)} | {_f(r['above_start_gib'])} | {_f(w + r['above_start_gib'])} | "
                     f"{_f(r['peak_gib'])} |")
    return lines


def table_forward(records) -> list:
    lines = ["| model | rank | LoRA FLOPs | off (s) | on / off (FLOP-predicted) | peft's forward / off | merged / off | "
             "merged copy (GiB) |", "|---|---|---|---|---|---|---|---|"]
    for r in (r for r in records if r.get("phase") in ("inference", "forward") and "error" not in r):
        for rank, forward in ((RANKS[0], r["forward"]), (RANKS[1], r[f"forward_r{RANKS[1]}"])):
            share = r["lora_flops"][str(rank)] / r["flops_plain"]
            merged = forward.get("merged")
            lines.append(f"| {r['name']} | {rank} | +{100 * share:.1f} % | {_f(forward['off']['median_s'])} | "
                         f"{_f(forward['on']['ratio_to_off'], 3)} ({_f(1 + share, 3)}) | "
                         f"{_f(forward['peft']['ratio_to_off'], 3) if 'peft' in forward else '-'} | "
                         f"{_f(merged['ratio_to_off'], 3) if merged else '-'} | "
                         f"{_f(r['merged_gib']) if merged else '-'} |")
    return lines


def generation_split(r, rank: int) -> dict:
    """HyperNoise over base, against the floor: ideal = base + one plain backbone forward (the
    bypassed forward); the excess over it split into the LoRA's FLOPs (the plain forward times
    their share) and the rest (per-layer overhead: peft's wrappers, the small LoRA matmuls)."""
    g, plain = r["generation"], r["forward"]["off"]["median_s"]
    base, hn, merged = g["base"]["median_s"], g[f"hypernoise_r{rank}"]["median_s"], g["merged"]["median_s"]
    lora = plain * r["lora_flops"][str(rank)] / r["flops_plain"]
    excess = hn - (base + plain)
    forward = r["forward"] if rank == RANKS[0] else r[f"forward_r{rank}"]
    g_pass = r["decode"]["decode"]["median_s"] + r["steps"] * plain  # g from its parts: steps forwards + decode
    return {"base_s": base, "hypernoise_s": hn, "merged_s": merged, "ratio": hn / base, "merged_ratio": merged / base,
            "ideal_ratio": (base + plain) / base, "floor": r["floor"], "excess_s": excess, "lora_flops_s": lora,
            "per_layer_s": excess - lora,
            # the same ratios composed from the paired forward ratios and the decode (robust to drift)
            "composed_ratio": 1 + plain * forward["on"]["ratio_to_off"] / g_pass,
            "composed_merged_ratio": 1 + plain * r["forward"]["merged"]["ratio_to_off"] / g_pass}


def table_generation(records) -> list:
    lines = ["| model | rank | decode (s) | base (s) | HyperNoise (s) | ratio (from components) | merged ratio (from "
             "components) | (base + 1 plain forward) / base | NFE floor | excess over ideal: LoRA FLOPs / rest (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in (r for r in records if r.get("phase") == "inference" and "error" not in r):
        for rank in RANKS:
            x = generation_split(r, rank)
            merged = f"{_f(x['merged_ratio'], 3)} ({_f(x['composed_merged_ratio'], 3)})" if rank == RANKS[0] else "-"
            lines.append(f"| {r['name']} | {rank} | {_f(r['decode']['decode']['median_s'], 2)} | "
                         f"{_f(x['base_s'], 2)} | {_f(x['hypernoise_s'], 2)} | {_f(x['ratio'], 3)} "
                         f"({_f(x['composed_ratio'], 3)}) | {merged} | "
                         f"{_f(x['ideal_ratio'], 3)} | {_f(x['floor'])} | {_f(x['lora_flops_s'])} / "
                         f"{_f(x['per_layer_s'])} |")
    return lines


def table_layers(records) -> list:
    """The adapted layers timed alone and summed over one pass, as a share of the plain forward."""
    lines = ["| model | rank | layers (shapes) | plain forward (s) | adapted layers' base time (s) | LoRA FLOPs | "
             "library: extra / predicted forward ratio | peft: extra / predicted forward ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for r in (r for r in records if r.get("phase") == "layers" and "error" not in r):
        plain = r["plain_forward_s"]
        for rank in RANKS:
            x = r[str(rank)]
            cells = [f"{_f(x[key])} s / {_f(1 + x[key] / plain, 3)}" for key in ("library_extra_s", "peft_extra_s")]
            lines.append(f"| {r['name']} | {rank} | {x['layers']} ({len(x['shapes'])}) | {_f(plain)} | "
                         f"{_f(x['base_s'])} | {_f(x['lora_flops_s'])} s / {_f(1 + x['lora_flops_s'] / plain, 3)} | "
                         f"{cells[0]} | {cells[1]} |")
    return lines


def table_overhead(records) -> list:
    lines = ["| model | rounds | plain (s) | peft switch off / plain | bypass off / plain | peft wrappers per pass "
             "(ms) | bypass switch per pass (ms) |", "|---|---|---|---|---|---|---|"]
    for r in (r for r in records if r.get("phase") == "overhead" and "error" not in r):
        lines.append(f"| {r['name']} | {r['rounds']} | {_f(r['plain']['median_s'], 3)} | "
                     f"{_f(r['off_peft_switch']['ratio_to_plain'], 3)} | {_f(r['off_bypass']['ratio_to_plain'], 3)} | "
                     f"{_f(1e3 * r['peft_wrappers_per_pass_s'])} | {_f(1e3 * r['bypass_switch_s'])} |")
    return lines


def table_max_batch(records) -> list:
    lines = ["| job | largest batch | stopped by | step (s) / peak (GiB) per batch |", "|---|---|---|---|"]
    for r in (r for r in records if r.get("phase") == "max-batch" and "error" not in r):
        steps = ", ".join(f"{b['batch']}: {_f(b['step_s'])} / {_f(b['peak_gib'], 1)}" for b in r["batches"])
        lines.append(f"| {r['name']} | {r['largest_batch']} | {r['stopped_by']} | {steps} |")
    return lines


def table_1024(derived) -> list:
    lines = ["| generator | ensemble | checkpointing | generator 256 / 512 px (GiB) | generator 1024 px (GiB, fitted) "
             "| ensemble (GiB) | total 512 px | **total 1024 px** |", "|---|---|---|---|---|---|---|---|"]
    for r in derived.get("rows", []):
        lines.append(f"| {r['dtype']} | {r['reward_dtype']} | {'on' if r['checkpointing'] else 'off'} | "
                     f"{_f(r['generator_256_gib'])} / {_f(r['generator_512_gib'])} | {_f(r['generator_1024_gib'])} | "
                     f"{_f(r['ensemble_gib'])} | {_f(r['total_512_gib'])} | **{_f(r['total_1024_gib'])}** |")
    return lines


def tables(records, derived) -> str:
    sections = [("Training step", table_train), ("Reward ensemble alone", table_reward),
                ("Backbone forward", table_forward), ("LoRA layers alone", table_layers),
                ("Generation", table_generation),
                ("Attached-but-off overhead", table_overhead), ("Largest batch", table_max_batch)]
    out = []
    for title, fn in sections:
        lines = fn(records)
        if len(lines) > 2:
            out += [f"### {title}", "", *lines, ""]
    if derived.get("rows"):
        out += ["### SANA-Sprint 0.6B training memory at 1024 px with the ReNO ensemble", "", *table_1024(derived), "",
                derived["method"], ""]
        if "check" in derived:
            c = derived["check"]
            out += [f"Check at {c['px']} px ({c['dtype']}, ensemble {c['reward_dtype']}, checkpointing "
                    f"{'on' if c['checkpointing'] else 'off'}): measured {_f(c['measured_gib'])} GiB, sum of the "
                    f"parts {_f(c['sum_of_parts_gib'])} GiB.", ""]
    errors = [r for r in records if "error" in r]
    if errors:
        out += ["### Not measured", "", *[f"- {r['name']} ({r.get('phase')}): {r['error']}" for r in errors], ""]
    return "\n".join(out)


# --------------------------------------------------------------------------- main
def _meta(args) -> dict:
    meta = {"command": "python benchmarks/realsize.py " + " ".join(sys.argv[1:]), "device": args.device,
            "plan": args.plan, "threads": args.threads, "quick": args.quick, "torch": torch.__version__,
            "python": platform.python_version(), "machine": platform.machine(), "processor": _cpu_name(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "weights": "random, from the published configs"}
    if args.device.startswith("cuda") and torch.cuda.is_available():
        meta["gpu"] = torch.cuda.get_device_name(0)
    return meta


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny configs of the same classes (the test path)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES), help="dtype of the GPU plan")
    parser.add_argument("--plan", choices=("cpu", "gpu"), default=None, help="default: gpu on cuda, else cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per job")
    parser.add_argument("--only", nargs="+", default=None, help="run only the jobs whose name contains one of these")
    parser.add_argument("--deadline-s", type=float, default=None, help="skip jobs that would start after this")
    parser.add_argument("--out", default=None, help="JSON file (default benchmarks/results/realsize[_gpu].json)")
    parser.add_argument("--table", default=None, help="also write the markdown tables to this file")
    parser.add_argument("--update", action="store_true",
                        help="keep the other jobs' records already in --out, replacing those of the jobs run now")
    parser.add_argument("--job", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--job-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.job:
        run_job(json.loads(args.job), Path(args.job_out))
        return 0
    args.plan = args.plan or ("gpu" if args.device.startswith("cuda") else "cpu")
    full = (gpu_plan if args.plan == "gpu" else cpu_plan)(args)
    plan = [job for job in full if args.only is None or any(text in job["name"] for text in args.only)]
    out = Path(args.out or RESULTS / ("realsize_gpu.json" if args.plan == "gpu" else "realsize.json"))
    records = run_plan(plan, args.deadline_s)
    meta = _meta(args)
    if args.update and out.exists():
        old = json.loads(out.read_text())
        names = {job["name"] for job in plan}
        order = [job["name"] for job in full]
        records = sorted([r for r in old["results"] if r["name"] not in names] + records,
                         key=lambda r: order.index(r["name"]) if r["name"] in order else len(order))
        meta = {**old["meta"], "updates": old["meta"].get("updates", []) + [meta]}
    derived = memory_at_1024(records, scale=8 if args.quick else 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "results": records, "memory_at_1024": derived}, indent=1))
    text = tables(records, derived)
    print(text)
    if args.table:
        Path(args.table).write_text(f"{meta['command']}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
