"""Independent reference forwards of the reward models, in plain torch, from the tensors' OWN key names.

Architecture facts (widths, head counts, activations, LayerNorm eps) are copied below from the
published configurations; nothing here reads hypernoise's tables, its configs or transformers'
model code. Attention is torch's ``F.multi_head_attention_forward``: the maths of
``nn.MultiheadAttention``, which open_clip's residual blocks run, with q, k, v as rows
``[q; k; v]`` of one fused projection (open_clip ``in_proj``, timm ``qkv``) or as three separate
ones (transformers' CLIP, BERT).

The end of the file builds random checkpoints in open_clip's ORIGINAL layout at a published
architecture's widths (``make_open_clip_state_dict``) and the character-level CLIP vocabulary of
the test tokenizers (``clip_char_vocab``); tests/rewards and tests/geneval share them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# ------------------------------------------------------------------ published architectures
#: open_clip src/open_clip/model_configs/ViT-H-14.json (HPSv2.1): vision width 1280, head_width 80
#: (16 heads), patch 14, image 224; text width 1024, heads 16, context 77; embed_dim 1024; nn.GELU.
#: The same numbers are in the config.json of laion/CLIP-ViT-H-14-laion2B-s32B-b79K and
#: yuvalkirstain/PickScore_v1 (vision 16 heads, text 16 heads, projection 1024, hidden_act gelu).
VIT_H_14 = dict(vision_width=1280, vision_heads=16, patch=14, image=224, vision_mlp=5120,
                text_width=1024, text_heads=16, text_mlp=4096, context=77, embed=1024, act="gelu", eps=1e-5)
#: openai/clip-vit-large-patch14 config.json: vision 1024 wide, 16 heads, patch 14, image 224;
#: text 768 wide, 12 heads; projection 768; hidden_act quick_gelu (also the aesthetic tower).
VIT_L_14_OPENAI = dict(vision_width=1024, vision_heads=16, patch=14, image=224, vision_mlp=4096,
                       text_width=768, text_heads=12, text_mlp=3072, context=77, embed=768, act="quick_gelu",
                       eps=1e-5)
#: BLIP ViT-L/16 (create_vit('large') in BLIP / ImageReward models/blip.py): width 1024, 16 heads,
#: patch 16, timm LayerNorm eps 1e-6, exact GELU; ImageReward builds it at image_size 224.
BLIP_VIT_L = dict(width=1024, heads=16, patch=16, image=224, mlp=4096, eps=1e-6)
#: BLIP configs/med_config.json (BERT-base): hidden 768, 12 heads, intermediate 3072, eps 1e-12,
#: gelu; BLIP_Pretrain sets encoder_width to the ViT's width (1024 for ViT-L).
BLIP_MED = dict(width=768, heads=12, mlp=3072, eps=1e-12, encoder_width=1024)
#: ImageReward.py: MLP(768) = 768-1024-128-64-16-1 at layers.{0,2,4,6,7}; (r - mean) / std
IR_HEAD = [768, 1024, 128, 64, 16, 1]
IR_MEAN, IR_STD = 0.16717362830052426, 1.0333394966054072
#: LAION improved-aesthetic-predictor MLP(768), the same layer indices
AESTHETIC_HEAD = [768, 1024, 128, 64, 16, 1]
CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)

ACTIVATIONS = {"gelu": F.gelu, "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x)}
HEAD_LAYERS = (0, 2, 4, 6, 7)


def normalise_pixels(images_01: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] in [0, 1] at the model's size -> CLIP-normalised pixel values."""
    return (images_01 - CLIP_MEAN) / CLIP_STD


def layer_norm(x, sd, name, eps):
    return F.layer_norm(x, x.shape[-1:], sd[f"{name}.weight"], sd[f"{name}.bias"], eps=eps)


def linear(x, sd, name):
    return F.linear(x, sd[f"{name}.weight"], sd.get(f"{name}.bias"))


def depth(sd, prefix) -> int:
    """How many blocks ``{prefix}{i}.`` the state dict holds."""
    return len({k[len(prefix):].split(".")[0] for k in sd if k.startswith(prefix)})


def attention(x, heads, *, qkv, out, kv=None, causal=False, pad=None):
    """Multi-head attention of x [B, N, D] over kv [B, M, D_kv] (default x) -> [B, N, D].

    qkv: (weight [3D, D], bias [3D]) fused, or ((w_q, b_q), (w_k, b_k), (w_v, b_v)); out: (w, b);
    pad: [B, M] True where a key is padding."""
    kv = x if kv is None else kv
    fused = torch.is_tensor(qkv[0])
    if fused:
        weights = dict(in_proj_weight=qkv[0], in_proj_bias=qkv[1])
    else:
        (wq, bq), (wk, bk), (wv, bv) = qkv
        weights = dict(in_proj_weight=None, in_proj_bias=torch.cat([bq, bk, bv]), use_separate_proj_weight=True,
                       q_proj_weight=wq, k_proj_weight=wk, v_proj_weight=wv)
    n = x.shape[1]
    mask = torch.ones(n, n, dtype=torch.bool).triu(1) if causal else None
    y, _ = F.multi_head_attention_forward(
        x.transpose(0, 1), kv.transpose(0, 1), kv.transpose(0, 1), x.shape[-1], heads, bias_k=None, bias_v=None,
        add_zero_attn=False, dropout_p=0.0, out_proj_weight=out[0], out_proj_bias=out[1], training=False,
        key_padding_mask=pad, need_weights=False, attn_mask=mask, **weights)
    return y.transpose(0, 1)


def _pair(sd, name):
    return sd[f"{name}.weight"], sd[f"{name}.bias"]


# ------------------------------------------------------------------ CLIP, open_clip layout (HPS)
def _open_clip_block(x, sd, p, heads, act, causal):
    h = layer_norm(x, sd, f"{p}ln_1", 1e-5)
    qkv = (sd[f"{p}attn.in_proj_weight"], sd[f"{p}attn.in_proj_bias"])
    x = x + attention(h, heads, qkv=qkv, out=_pair(sd, f"{p}attn.out_proj"), causal=causal)
    h = ACTIVATIONS[act](linear(layer_norm(x, sd, f"{p}ln_2", 1e-5), sd, f"{p}mlp.c_fc"))
    return x + linear(h, sd, f"{p}mlp.c_proj")


def open_clip_image(sd, pixels, arch):
    """open_clip VisionTransformer: [B, 3, S, S] normalised -> image features [B, embed] (``x @ proj``)."""
    x = F.conv2d(pixels, sd["visual.conv1.weight"], stride=arch["patch"]).flatten(2).transpose(1, 2)
    x = torch.cat([sd["visual.class_embedding"].expand(len(x), 1, -1), x], dim=1) + sd["visual.positional_embedding"]
    x = layer_norm(x, sd, "visual.ln_pre", 1e-5)
    prefix = "visual.transformer.resblocks."
    for i in range(depth(sd, prefix)):
        x = _open_clip_block(x, sd, f"{prefix}{i}.", arch["vision_heads"], arch["act"], causal=False)
    return layer_norm(x[:, 0], sd, "visual.ln_post", 1e-5) @ sd["visual.proj"]


def open_clip_text(sd, ids, arch):
    """open_clip text tower: ids [B, L] -> text features [B, embed], pooled at the highest id (end of text)."""
    x = sd["token_embedding.weight"][ids] + sd["positional_embedding"][:ids.shape[1]]
    prefix = "transformer.resblocks."
    for i in range(depth(sd, prefix)):
        x = _open_clip_block(x, sd, f"{prefix}{i}.", arch["text_heads"], arch["act"], causal=True)
    x = layer_norm(x, sd, "ln_final", 1e-5)
    return x[torch.arange(len(ids)), ids.argmax(-1)] @ sd["text_projection"]


# ------------------------------------------------------- CLIP, transformers layout (CLIP, PickScore, aesthetic)
def _hf_clip_block(x, sd, p, heads, act, causal):
    a = f"{p}self_attn."
    qkv = tuple(_pair(sd, f"{a}{n}_proj") for n in "qkv")
    x = x + attention(layer_norm(x, sd, f"{p}layer_norm1", 1e-5), heads, qkv=qkv, out=_pair(sd, f"{a}out_proj"),
                      causal=causal)
    h = ACTIVATIONS[act](linear(layer_norm(x, sd, f"{p}layer_norm2", 1e-5), sd, f"{p}mlp.fc1"))
    return x + linear(h, sd, f"{p}mlp.fc2")


def hf_clip_image(sd, pixels, arch):
    """A ``CLIPModel`` folder's vision tower and projection: pixels -> image embeddings [B, embed]."""
    v = "vision_model."
    x = F.conv2d(pixels, sd[f"{v}embeddings.patch_embedding.weight"], stride=arch["patch"]).flatten(2).transpose(1, 2)
    x = torch.cat([sd[f"{v}embeddings.class_embedding"].expand(len(x), 1, -1), x], dim=1)
    x = layer_norm(x + sd[f"{v}embeddings.position_embedding.weight"], sd, f"{v}pre_layrnorm", 1e-5)
    prefix = f"{v}encoder.layers."
    for i in range(depth(sd, prefix)):
        x = _hf_clip_block(x, sd, f"{prefix}{i}.", arch["vision_heads"], arch["act"], causal=False)
    return linear(layer_norm(x[:, 0], sd, f"{v}post_layernorm", 1e-5), sd, "visual_projection")


def hf_clip_text(sd, ids, arch):
    """A ``CLIPModel`` folder's text tower and projection: ids [B, L] -> text embeddings [B, embed]."""
    t = "text_model."
    x = sd[f"{t}embeddings.token_embedding.weight"][ids] + sd[f"{t}embeddings.position_embedding.weight"][:ids.shape[1]]
    prefix = f"{t}encoder.layers."
    for i in range(depth(sd, prefix)):
        x = _hf_clip_block(x, sd, f"{prefix}{i}.", arch["text_heads"], arch["act"], causal=True)
    x = layer_norm(x, sd, f"{t}final_layer_norm", 1e-5)
    return linear(x[torch.arange(len(ids)), ids.argmax(-1)], sd, "text_projection")


def scaled_cosine(image_features, text_features, scale=1.0):
    """scale * cos(image, text) [B]."""
    return scale * (F.normalize(image_features, dim=-1) * F.normalize(text_features, dim=-1)).sum(-1)


def mlp_head(h, sd, prefix="layers."):
    """The LAION / ImageReward head: Linear layers at {prefix}{0,2,4,6,7}, no activations in eval."""
    for i in HEAD_LAYERS:
        h = linear(h, sd, f"{prefix}{i}")
    return h[:, 0]


# ------------------------------------------------------------------ ImageReward (BLIP)
def blip_vit(sd, pixels, vit=BLIP_VIT_L):
    """BLIP's timm ViT from ``blip.visual_encoder.*``: pixels -> all token states [B, 1 + patches, width]."""
    v = "blip.visual_encoder."
    x = F.conv2d(pixels, sd[f"{v}patch_embed.proj.weight"], sd[f"{v}patch_embed.proj.bias"], stride=vit["patch"])
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd[f"{v}cls_token"].expand(len(x), 1, -1), x], dim=1) + sd[f"{v}pos_embed"]
    for i in range(depth(sd, f"{v}blocks.")):
        p = f"{v}blocks.{i}."
        h = layer_norm(x, sd, f"{p}norm1", vit["eps"])
        x = x + attention(h, vit["heads"], qkv=_pair(sd, f"{p}attn.qkv"), out=_pair(sd, f"{p}attn.proj"))
        x = x + linear(F.gelu(linear(layer_norm(x, sd, f"{p}norm2", vit["eps"]), sd, f"{p}mlp.fc1")), sd, f"{p}mlp.fc2")
    return layer_norm(x, sd, f"{v}norm", vit["eps"])


def _bert_attention(x, sd, a, heads, eps, kv=None, pad=None, causal=False):
    qkv = tuple(_pair(sd, f"{a}self.{n}") for n in ("query", "key", "value"))
    h = attention(x, heads, qkv=qkv, out=_pair(sd, f"{a}output.dense"), kv=kv, pad=pad, causal=causal)
    return layer_norm(h + x, sd, f"{a}output.LayerNorm", eps)


def blip_text(sd, ids, mask, image_embeds, med=BLIP_MED, causal=False):
    """BLIP's BERT with cross-attention (``blip.text_encoder.*``), run as ImageReward runs it
    (bidirectional, every image token attended to): -> the [CLS] state [B, width]."""
    e = "blip.text_encoder."
    positions = sd[f"{e}embeddings.position_embeddings.weight"][:ids.shape[1]]
    x = layer_norm(sd[f"{e}embeddings.word_embeddings.weight"][ids] + positions, sd, f"{e}embeddings.LayerNorm",
                   med["eps"])
    for i in range(depth(sd, f"{e}encoder.layer.")):
        p = f"{e}encoder.layer.{i}."
        x = _bert_attention(x, sd, f"{p}attention.", med["heads"], med["eps"], pad=mask == 0, causal=causal)
        x = _bert_attention(x, sd, f"{p}crossattention.", med["heads"], med["eps"], kv=image_embeds)
        h = linear(F.gelu(linear(x, sd, f"{p}intermediate.dense")), sd, f"{p}output.dense")
        x = layer_norm(h + x, sd, f"{p}output.LayerNorm", med["eps"])
    return x[:, 0]


# ------------------------------------------------------------------ random checkpoints, open_clip layout
def random_linear(gen, out_f, in_f, gain=1.5):
    """(weight [out, in] ~ N(0, gain^2 / in), bias [out] ~ N(0, 0.1^2))."""
    return torch.randn(out_f, in_f, generator=gen) * gain / math.sqrt(in_f), torch.randn(out_f, generator=gen) * 0.1


def random_norm(gen, width):
    """LayerNorm (weight 1 + N(0, 0.1^2), bias N(0, 0.1^2))."""
    return 1 + 0.1 * torch.randn(width, generator=gen), 0.1 * torch.randn(width, generator=gen)


def byte_alphabet() -> list[str]:
    """The 256 printable characters byte-level BPE uses for the 256 byte values."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return [chars[b] for b in range(256)]


def clip_char_vocab() -> dict[str, int]:
    """A CLIP BPE vocabulary with no merges: every byte character, then every character ending a
    word (``</w>``), then start- and end-of-text (the highest id, where open_clip pools)."""
    alphabet = byte_alphabet()
    vocab = {tok: i for i, tok in enumerate(alphabet + [c + "</w>" for c in alphabet])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return vocab


CLIP_VOCAB = 2 * 256 + 2


def open_clip_resblock(gen, prefix, width, mlp):
    """One open_clip ResidualAttentionBlock's tensors under ``prefix``."""
    sd = {}
    sd[f"{prefix}ln_1.weight"], sd[f"{prefix}ln_1.bias"] = random_norm(gen, width)
    sd[f"{prefix}attn.in_proj_weight"], sd[f"{prefix}attn.in_proj_bias"] = random_linear(gen, 3 * width, width)
    sd[f"{prefix}attn.out_proj.weight"], sd[f"{prefix}attn.out_proj.bias"] = random_linear(gen, width, width)
    sd[f"{prefix}ln_2.weight"], sd[f"{prefix}ln_2.bias"] = random_norm(gen, width)
    sd[f"{prefix}mlp.c_fc.weight"], sd[f"{prefix}mlp.c_fc.bias"] = random_linear(gen, mlp, width)
    sd[f"{prefix}mlp.c_proj.weight"], sd[f"{prefix}mlp.c_proj.bias"] = random_linear(gen, width, mlp)
    return sd


def make_open_clip_state_dict(arch=VIT_H_14, seed: int = 0, vision_layers: int = 1,
                              text_layers: int = 2) -> dict[str, torch.Tensor]:
    """An open_clip ViT CLIP in HPS_v2.1_compressed.pt's layout, at ``arch``'s widths (default
    ViT-H-14: 1280 / 1024 wide, 224 px in 14 px patches, 77 positions, projection 1024)."""
    gen = torch.Generator().manual_seed(seed)
    vw, tw, patch, embed = arch["vision_width"], arch["text_width"], arch["patch"], arch["embed"]
    grid = arch["image"] // patch
    sd = {
        "visual.class_embedding": torch.randn(vw, generator=gen),
        "visual.positional_embedding": 0.5 * torch.randn(grid * grid + 1, vw, generator=gen),
        "visual.proj": torch.randn(vw, embed, generator=gen) / math.sqrt(vw),
        "visual.conv1.weight": torch.randn(vw, 3, patch, patch, generator=gen) / math.sqrt(3 * patch * patch),
        "token_embedding.weight": torch.randn(CLIP_VOCAB, tw, generator=gen),
        "positional_embedding": 0.5 * torch.randn(arch["context"], tw, generator=gen),
        "text_projection": torch.randn(tw, embed, generator=gen) / math.sqrt(tw),
        "logit_scale": torch.tensor(math.log(100.0)),
    }
    sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"] = random_norm(gen, vw)
    sd["visual.ln_post.weight"], sd["visual.ln_post.bias"] = random_norm(gen, vw)
    sd["ln_final.weight"], sd["ln_final.bias"] = random_norm(gen, tw)
    for i in range(vision_layers):
        sd.update(open_clip_resblock(gen, f"visual.transformer.resblocks.{i}.", vw, arch["vision_mlp"]))
    for i in range(text_layers):
        sd.update(open_clip_resblock(gen, f"transformer.resblocks.{i}.", tw, arch["text_mlp"]))
    return sd
