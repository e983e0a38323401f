"""Tiny randomly initialised pipelines of the three diffusers families, for tests and benchmarks.

``save_tiny_pipeline("sana-sprint", folder)`` writes a folder with the same layout as the real
model on the hub (``model_index.json`` plus one sub-folder per component), so that the code path
a user's real weights take (``build_generator("auto", pretrained=folder)``) is the one exercised.
Every component is built from a config, with the tokenizers built in memory: nothing is
downloaded. Images are small (32 px by default), weights random; the schedulers are configured
as in the real distilled models (SD-Turbo's trailing Euler, SANA-Sprint's SCM, FLUX-Schnell's
unshifted flow matching).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from hypernoise.registry import Registry

#: family name -> builder() -> a diffusers pipeline with random weights
TINY_PIPELINES: Registry = Registry("tiny pipeline")

_CLIP_LENGTH = 16  # tokenizer max length of the tiny CLIP (77 in the real models)


def _byte_alphabet() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE (one character per byte value)."""
    spans = [("!", "~"), ("\u00a1", "\u00ac"), ("\u00ae", "\u00ff")]  # bytes that stand for themselves
    printable = {b for lo, hi in spans for b in range(ord(lo), ord(hi) + 1)}
    chars, shifted = [], 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + shifted))
            shifted += 1
    return chars


def tiny_clip_tokenizer():
    """A byte-level CLIP tokenizer with no merges; ``<|endoftext|>`` has the highest id."""
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0}
    for ch in _byte_alphabet():
        vocab[ch] = len(vocab)
        vocab[ch + "</w>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)  # the CLIP text model pools at this id
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=_CLIP_LENGTH)


def tiny_gemma_tokenizer():
    """A Gemma tokenizer whose vocabulary is the 256 byte-fallback tokens."""
    from transformers import GemmaTokenizer

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    vocab["\u2581"] = len(vocab)
    return GemmaTokenizer(vocab=vocab, merges=[], add_bos_token=True)


def tiny_t5_tokenizer():
    """A unigram T5 tokenizer over lower-case letters."""
    from transformers import T5Tokenizer

    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(c, -1.0) for c in "\u2581abcdefghijklmnopqrstuvwxyz"]
    return T5Tokenizer(vocab=pieces, extra_ids=100)


def _clip_text_model(tokenizer, hidden: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel

    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = CLIPTextConfig(bos_token_id=0, eos_token_id=eos, pad_token_id=eos, vocab_size=len(tokenizer),
                            hidden_size=hidden, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                            max_position_embeddings=_CLIP_LENGTH, projection_dim=hidden, hidden_act="gelu")
    return CLIPTextModel(config)


def _kl_vae(latent_channels: int = 4, **extra):
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(4, 8), in_channels=3, out_channels=3, latent_channels=latent_channels,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         layers_per_block=1, norm_num_groups=2, sample_size=32, **extra)


@TINY_PIPELINES.register("sd-turbo", help="UNet + KL VAE + CLIP, trailing Euler (SD-Turbo's scheduler)")
def tiny_sd_turbo():
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel

    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=16, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=2, attention_head_dim=2)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       timestep_spacing="trailing", steps_offset=1)
    tokenizer = tiny_clip_tokenizer()
    return StableDiffusionPipeline(vae=_kl_vae(), text_encoder=_clip_text_model(tokenizer), tokenizer=tokenizer,
                                   unet=unet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


@TINY_PIPELINES.register("sana-sprint", help="SANA transformer with guidance embedding + DC-AE + Gemma2, SCM")
def tiny_sana_sprint():
    from diffusers import AutoencoderDC, SanaSprintPipeline, SanaTransformer2DModel, SCMScheduler
    from transformers import Gemma2Config, Gemma2Model

    transformer = SanaTransformer2DModel(
        patch_size=1, in_channels=4, out_channels=4, num_layers=1, num_attention_heads=2, attention_head_dim=4,
        num_cross_attention_heads=2, cross_attention_head_dim=4, cross_attention_dim=8, caption_channels=8,
        sample_size=16, qk_norm="rms_norm_across_heads", guidance_embeds=True)
    vae = AutoencoderDC(
        in_channels=3, latent_channels=4, attention_head_dim=2, encoder_block_types=("ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "EfficientViTBlock"), encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8), encoder_qkv_multiscales=((), (5,)), decoder_qkv_multiscales=((), (5,)),
        encoder_layers_per_block=(1, 1), decoder_layers_per_block=(1, 1), downsample_block_type="conv",
        upsample_block_type="interpolate", decoder_norm_types="rms_norm", decoder_act_fns="silu",
        scaling_factor=0.41407)
    tokenizer = tiny_gemma_tokenizer()
    text_encoder = Gemma2Model(Gemma2Config(
        head_dim=16, hidden_size=8, intermediate_size=64, num_attention_heads=2, num_hidden_layers=1,
        num_key_value_heads=2, vocab_size=len(tokenizer), max_position_embeddings=512, attn_implementation="eager"))
    return SanaSprintPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer,
                              scheduler=SCMScheduler())


@TINY_PIPELINES.register("flux-schnell", help="FLUX transformer (no guidance embedding) + KL VAE + CLIP + T5")
def tiny_flux_schnell():
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    latent_channels = 4
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4 * latent_channels, num_layers=1, num_single_layers=1, attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
        guidance_embeds=False)
    tokenizer, tokenizer_2 = tiny_clip_tokenizer(), tiny_t5_tokenizer()
    text_encoder_2 = T5EncoderModel(T5Config(d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=2,
                                             vocab_size=len(tokenizer_2), relative_attention_num_buckets=8))
    vae = _kl_vae(latent_channels, use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609,
                  scaling_factor=1.5035)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=1.0, use_dynamic_shifting=False)
    return FluxPipeline(scheduler=scheduler, vae=vae, text_encoder=_clip_text_model(tokenizer), tokenizer=tokenizer,
                        text_encoder_2=text_encoder_2, tokenizer_2=tokenizer_2, transformer=transformer,
                        image_encoder=None, feature_extractor=None)


def build_tiny_pipeline(family: str, seed: int = 0):
    """A tiny pipeline of ``family`` with weights drawn from ``seed``."""
    builder: Callable = TINY_PIPELINES.get(family)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builder()


def save_tiny_pipeline(family: str, folder, seed: int = 0) -> Path:
    """Write a tiny pipeline of ``family`` to ``folder`` with ``save_pretrained``; returns the folder."""
    folder = Path(folder)
    build_tiny_pipeline(family, seed).save_pretrained(str(folder))
    return folder
