"""Reward checkpoints in their ORIGINAL layouts, written to tmp folders once per session.

- an open_clip ViT-H-14 ({"state_dict": ...}, HPS_v2.1_compressed.pt's key names),
- an ImageReward.pt (timm ViT-L/16 ``blip.visual_encoder``, BERT ``blip.text_encoder``, ``mlp``)
  with BLIP's published med_config.json,
- transformers CLIPModel folders: LAION ViT-H-14 and OpenAI ViT-L/14 at their real widths, and a
  tiny one for behaviour that does not depend on the architecture; LAION aesthetic heads,
- tokenizers built in memory (byte-level CLIP BPE; BERT WordPiece from a vocab file).

The model checkpoints have the real widths, patch and image sizes of the published models
(``reward_reference``) but one or two layers per tower and a small vocabulary (neither is a
width), so they build and run in about a second each on one CPU thread. Weights are random with
O(1) attention logits, so a wrong mapping (q/k swapped, a projection not transposed, a wrong head
count) changes the outputs by O(1), not by rounding noise.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from reward_reference import (AESTHETIC_HEAD, BLIP_MED, BLIP_VIT_L, CLIP_VOCAB, IR_HEAD, VIT_H_14, VIT_L_14_OPENAI,
                              clip_char_vocab, make_open_clip_state_dict)
from reward_reference import random_linear as _linear
from reward_reference import random_norm as _norm

torch.set_num_threads(1)

# the tiny CLIPModel's sizes (unpublished widths: transformers' config gives its heads)
IMAGE = 32
PATCH = 8
CONTEXT = 16
#: layers per tower of the real-width checkpoints
LAYERS = 1


@pytest.fixture(scope="session")
def clip_tokenizer_dir(tmp_path_factory):
    """A CLIP BPE tokenizer with no merges (one token per character); end-of-text is the highest id."""
    from transformers import CLIPTokenizer

    folder = tmp_path_factory.mktemp("clip_tokenizer")
    CLIPTokenizer(vocab=clip_char_vocab(), merges=[]).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def open_clip_state_dict():
    """HPSv2.1's open_clip ViT-H-14 at its real widths, 1 vision and 2 text layers."""
    return make_open_clip_state_dict()


@pytest.fixture(scope="session")
def hps_checkpoint(tmp_path_factory, open_clip_state_dict):
    """``HPS_v2.1_compressed.pt`` in a folder: {"state_dict": open_clip weights}."""
    path = tmp_path_factory.mktemp("hps") / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": open_clip_state_dict}, path)
    return path


# ---------------------------------------------------------------- BERT tokenizer / ImageReward

BERT_WORDS = ["a", "red", "cube", "on", "the", "table", "two", "cat", "##s", "blue", "sky", "dog", "photo", "of"]


@pytest.fixture(scope="session")
def bert_tokenizer_dir(tmp_path_factory):
    """bert-base-uncased's layout (vocab.txt, [PAD]=0, [UNK], [CLS], [SEP], [MASK]) in miniature."""
    specials = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [f"##{chr(c)}" for c in range(ord("a"), ord("z") + 1)]
    words = specials + [w for w in BERT_WORDS if w not in letters] + letters + [".", ","]
    folder = tmp_path_factory.mktemp("bert_tokenizer")
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(words)) + "\n")
    return folder


def bert_vocab_size(folder) -> int:
    """Words in vocab.txt plus ImageReward's [DEC] and [ENC]."""
    return len((folder / "vocab.txt").read_text().split()) + 2


#: BERT's 512 positions (ImageReward prompts use 35)
TEXT_POSITIONS = 512


def _bert_attention(gen, prefix, width, kv_width):
    sd = {}
    sd[f"{prefix}self.query.weight"], sd[f"{prefix}self.query.bias"] = _linear(gen, width, width)
    sd[f"{prefix}self.key.weight"], sd[f"{prefix}self.key.bias"] = _linear(gen, width, kv_width)
    sd[f"{prefix}self.value.weight"], sd[f"{prefix}self.value.bias"] = _linear(gen, width, kv_width)
    sd[f"{prefix}output.dense.weight"], sd[f"{prefix}output.dense.bias"] = _linear(gen, width, width)
    sd[f"{prefix}output.LayerNorm.weight"], sd[f"{prefix}output.LayerNorm.bias"] = _norm(gen, width)
    return sd


def _vit_block(gen, prefix, width, mlp):
    sd = {}
    sd[f"{prefix}norm1.weight"], sd[f"{prefix}norm1.bias"] = _norm(gen, width)
    sd[f"{prefix}attn.qkv.weight"], sd[f"{prefix}attn.qkv.bias"] = _linear(gen, 3 * width, width)
    sd[f"{prefix}attn.proj.weight"], sd[f"{prefix}attn.proj.bias"] = _linear(gen, width, width)
    sd[f"{prefix}norm2.weight"], sd[f"{prefix}norm2.bias"] = _norm(gen, width)
    sd[f"{prefix}mlp.fc1.weight"], sd[f"{prefix}mlp.fc1.bias"] = _linear(gen, mlp, width)
    sd[f"{prefix}mlp.fc2.weight"], sd[f"{prefix}mlp.fc2.bias"] = _linear(gen, width, mlp)
    return sd


def make_head_state_dict(gen, widths, prefix="layers.", input_gain=1.0):
    """A LAION / ImageReward head; ``input_gain`` scales the first layer (a unit-norm input needs
    ~sqrt(width) for O(1) outputs, as the released aesthetic heads have)."""
    sd = {}
    for index, (a, b) in zip((0, 2, 4, 6, 7), zip(widths[:-1], widths[1:])):
        sd[f"{prefix}{index}.weight"], sd[f"{prefix}{index}.bias"] = _linear(gen, b, a, gain=input_gain if index == 0
                                                                              else 1.0)
    return sd


def make_imagereward_state_dict(vocab: int, seed: int = 1, layers: int = LAYERS) -> dict[str, torch.Tensor]:
    """ImageReward.pt's layout at its real widths: ViT-L/16 (1024 wide, 224 px in 16 px patches),
    BERT 768 wide with cross-attention to the 1024-wide image tokens, head 768-1024-128-64-16-1."""
    gen = torch.Generator().manual_seed(seed)
    w, t, patch, mlp = BLIP_VIT_L["width"], BLIP_MED["width"], BLIP_VIT_L["patch"], BLIP_VIT_L["mlp"]
    grid = BLIP_VIT_L["image"] // patch
    v = "blip.visual_encoder."
    sd = {
        f"{v}cls_token": torch.randn(1, 1, w, generator=gen),
        f"{v}pos_embed": 0.5 * torch.randn(1, grid * grid + 1, w, generator=gen),
        f"{v}patch_embed.proj.weight": torch.randn(w, 3, patch, patch, generator=gen) / math.sqrt(3 * patch * patch),
        f"{v}patch_embed.proj.bias": 0.1 * torch.randn(w, generator=gen),
    }
    sd[f"{v}norm.weight"], sd[f"{v}norm.bias"] = _norm(gen, w)
    for i in range(layers):
        sd.update(_vit_block(gen, f"{v}blocks.{i}.", w, mlp))
    e = "blip.text_encoder."
    sd[f"{e}embeddings.word_embeddings.weight"] = torch.randn(vocab, t, generator=gen)
    sd[f"{e}embeddings.position_embeddings.weight"] = 0.5 * torch.randn(TEXT_POSITIONS, t, generator=gen)
    sd[f"{e}embeddings.position_ids"] = torch.arange(TEXT_POSITIONS).unsqueeze(0)
    sd[f"{e}embeddings.LayerNorm.weight"], sd[f"{e}embeddings.LayerNorm.bias"] = _norm(gen, t)
    for i in range(layers):
        p = f"{e}encoder.layer.{i}."
        sd.update(_bert_attention(gen, f"{p}attention.", t, t))
        sd.update(_bert_attention(gen, f"{p}crossattention.", t, BLIP_MED["encoder_width"]))
        sd[f"{p}intermediate.dense.weight"], sd[f"{p}intermediate.dense.bias"] = _linear(gen, BLIP_MED["mlp"], t)
        sd[f"{p}output.dense.weight"], sd[f"{p}output.dense.bias"] = _linear(gen, t, BLIP_MED["mlp"])
        sd[f"{p}output.LayerNorm.weight"], sd[f"{p}output.LayerNorm.bias"] = _norm(gen, t)
    # BLIP pre-training projections (embed_dim 256), present in the real file and unused by ImageReward
    sd["blip.vision_proj.weight"], sd["blip.vision_proj.bias"] = _linear(gen, 256, w)
    sd["blip.text_proj.weight"], sd["blip.text_proj.bias"] = _linear(gen, 256, t)
    sd.update(make_head_state_dict(gen, IR_HEAD, prefix="mlp.layers."))
    return sd


#: BLIP's published configs/med_config.json, as ImageReward ships it (BLIP_Pretrain replaces
#: encoder_width with the ViT's 1024; the layer count and vocabulary come from the tensors)
MED_CONFIG = {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
              "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
              "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert",
              "num_attention_heads": 12, "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2,
              "vocab_size": 30524, "encoder_width": 768, "add_cross_attention": True}


@pytest.fixture(scope="session")
def imagereward_state_dict(bert_tokenizer_dir):
    return make_imagereward_state_dict(bert_vocab_size(bert_tokenizer_dir))


@pytest.fixture(scope="session")
def imagereward_checkpoint(tmp_path_factory, imagereward_state_dict):
    """``ImageReward.pt`` with ``med_config.json`` beside it."""
    folder = tmp_path_factory.mktemp("imagereward")
    torch.save(imagereward_state_dict, folder / "ImageReward.pt")
    (folder / "med_config.json").write_text(json.dumps(MED_CONFIG))
    return folder / "ImageReward.pt"


# ---------------------------------------------------------------- CLIPModel folders, aesthetic heads

def tiny_clip_config(hidden_act="gelu"):
    from transformers import CLIPConfig

    text = dict(vocab_size=CLIP_VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=CONTEXT, hidden_act=hidden_act,
                bos_token_id=CLIP_VOCAB - 2, eos_token_id=CLIP_VOCAB - 1, pad_token_id=CLIP_VOCAB - 1)
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                  image_size=IMAGE, patch_size=PATCH, hidden_act=hidden_act)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=48, logit_scale_init_value=math.log(100))


@pytest.fixture(scope="session")
def clip_model_dir(tmp_path_factory, clip_tokenizer_dir):
    """A tiny transformers CLIPModel folder with its tokenizer (the layout of openai/clip-vit-large-patch14)."""
    return write_clip_folder(tmp_path_factory.mktemp("clip_model"), tiny_clip_config(hidden_act="quick_gelu"),
                             clip_tokenizer_dir, seed=2)


def clip_config(arch, layers: int = LAYERS):
    """A transformers ``CLIPConfig`` at ``arch``'s published widths and heads, ``layers`` deep."""
    from transformers import CLIPConfig

    common = dict(hidden_act=arch["act"], layer_norm_eps=arch["eps"], num_hidden_layers=layers)
    text = dict(vocab_size=CLIP_VOCAB, hidden_size=arch["text_width"], intermediate_size=arch["text_mlp"],
                num_attention_heads=arch["text_heads"], max_position_embeddings=arch["context"],
                bos_token_id=CLIP_VOCAB - 2, eos_token_id=CLIP_VOCAB - 1, pad_token_id=CLIP_VOCAB - 1, **common)
    vision = dict(hidden_size=arch["vision_width"], intermediate_size=arch["vision_mlp"], patch_size=arch["patch"],
                  num_attention_heads=arch["vision_heads"], image_size=arch["image"], **common)
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=arch["embed"],
                      logit_scale_init_value=math.log(100))


def randomise_(model, seed: int) -> None:
    """Random weights with O(1) attention logits (the default init's are near zero): matrices
    N(0, 1.5^2 / fan_in), embeddings N(0, 0.5^2), LayerNorm weights 1 + N(0, 0.1^2), biases N(0, 0.1^2)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if "embedding" in name:
                param.copy_(noise / math.sqrt(param[0].numel()) if param.ndim == 4 else 0.5 * noise)
            elif param.ndim == 2:
                param.copy_(noise * 1.5 / math.sqrt(param.shape[1]))
            elif param.ndim == 1:
                param.copy_(0.1 * noise + (1.0 if name.endswith("weight") else 0.0))


def write_clip_folder(folder, config, tokenizer_dir, seed: int):
    """A ``CLIPModel`` folder (config.json, model.safetensors, tokenizer) of ``config``, random weights."""
    from transformers import CLIPModel, CLIPTokenizer

    model = CLIPModel(config)
    randomise_(model, seed)
    model.save_pretrained(folder)
    CLIPTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def laion_vit_h_dir(tmp_path_factory, clip_tokenizer_dir):
    """laion/CLIP-ViT-H-14-laion2B-s32B-b79K's architecture (also PickScore_v1's), one layer per tower."""
    return write_clip_folder(tmp_path_factory.mktemp("laion_vit_h"), clip_config(VIT_H_14), clip_tokenizer_dir, seed=20)


@pytest.fixture(scope="session")
def openai_vit_l_dir(tmp_path_factory, clip_tokenizer_dir):
    """openai/clip-vit-large-patch14's architecture (quick GELU), one layer per tower."""
    return write_clip_folder(tmp_path_factory.mktemp("openai_vit_l"), clip_config(VIT_L_14_OPENAI), clip_tokenizer_dir,
                             seed=21)


@pytest.fixture(scope="session")
def aesthetic_heads(tmp_path_factory):
    """Both LAION head files (48-d input for the tiny CLIP) in one folder."""
    folder = tmp_path_factory.mktemp("aesthetic")
    for seed, name in enumerate(("sac+logos+ava1-l14-linearMSE.pth", "ava+logos-l14-linearMSE.pth")):
        gen = torch.Generator().manual_seed(10 + seed)
        torch.save(make_head_state_dict(gen, [48, 40, 16, 8, 4, 1]), folder / name)
    return folder


@pytest.fixture(scope="session")
def aesthetic_head_file(tmp_path_factory):
    """``sac+logos+ava1-l14-linearMSE.pth`` at its real widths, 768-1024-128-64-16-1."""
    path = tmp_path_factory.mktemp("aesthetic_real") / "sac+logos+ava1-l14-linearMSE.pth"
    head = make_head_state_dict(torch.Generator().manual_seed(12), AESTHETIC_HEAD, input_gain=AESTHETIC_HEAD[0] ** 0.5)
    torch.save(head, path)
    return path


@pytest.fixture
def images():
    """Two 32 x 32 images in [0, 1], requiring grad."""
    gen = torch.Generator().manual_seed(3)
    return torch.rand(2, 3, IMAGE, IMAGE, generator=gen).requires_grad_(True)


@pytest.fixture
def images_224():
    """Two 224 x 224 images in [0, 1] (the real models' input size: preprocessing is only the
    normalisation), requiring grad."""
    gen = torch.Generator().manual_seed(6)
    return torch.rand(2, 3, 224, 224, generator=gen).requires_grad_(True)
