"""Tiny reward checkpoints in their ORIGINAL layouts, written to tmp folders.

- an open_clip ViT checkpoint ({"state_dict": ...}, HPS_v2.1_compressed.pt's key names),
- an ImageReward.pt (timm ViT ``blip.visual_encoder``, BERT ``blip.text_encoder``, ``mlp``) with
  its med_config.json,
- LAION aesthetic heads (``layers.{0,2,4,6,7}``) and a tiny transformers CLIPModel folder,
- tokenizers built in memory (byte-level CLIP BPE; BERT WordPiece from a vocab file).

Weights are random with O(1) attention logits, so a wrong mapping (q/k swapped, a projection not
transposed) changes the outputs by O(1), not by rounding noise.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

torch.set_num_threads(1)

# Widths of 128 give two heads of width 64 (open_clip's and BLIP's head width), and square
# projections, so a missing transpose is a numerical error, not a shape error.
WIDTH = 128
IMAGE = 32
PATCH = 8
CONTEXT = 16


def _linear(gen, out_f, in_f, gain=1.5):
    return torch.randn(out_f, in_f, generator=gen) * gain / math.sqrt(in_f), torch.randn(out_f, generator=gen) * 0.1


def _norm(gen, width):
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


@pytest.fixture(scope="session")
def clip_tokenizer_dir(tmp_path_factory):
    """A CLIP BPE tokenizer with no merges (one token per character); end-of-text is the highest id."""
    from transformers import CLIPTokenizer

    alphabet = byte_alphabet()
    vocab = {tok: i for i, tok in enumerate(alphabet + [c + "</w>" for c in alphabet])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder = tmp_path_factory.mktemp("clip_tokenizer")
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    return folder


CLIP_VOCAB = 2 * 256 + 2


def _resblock(gen, prefix, width, mlp):
    sd = {}
    sd[f"{prefix}ln_1.weight"], sd[f"{prefix}ln_1.bias"] = _norm(gen, width)
    sd[f"{prefix}attn.in_proj_weight"], sd[f"{prefix}attn.in_proj_bias"] = _linear(gen, 3 * width, width)
    sd[f"{prefix}attn.out_proj.weight"], sd[f"{prefix}attn.out_proj.bias"] = _linear(gen, width, width)
    sd[f"{prefix}ln_2.weight"], sd[f"{prefix}ln_2.bias"] = _norm(gen, width)
    sd[f"{prefix}mlp.c_fc.weight"], sd[f"{prefix}mlp.c_fc.bias"] = _linear(gen, mlp, width)
    sd[f"{prefix}mlp.c_proj.weight"], sd[f"{prefix}mlp.c_proj.bias"] = _linear(gen, width, mlp)
    return sd


def make_open_clip_state_dict(seed: int = 0, layers: int = 2) -> dict[str, torch.Tensor]:
    """An open_clip ViT CLIP (HPS layout): 128 wide towers, 32 px images in 8 px patches."""
    gen = torch.Generator().manual_seed(seed)
    w, grid = WIDTH, IMAGE // PATCH
    sd = {
        "visual.class_embedding": torch.randn(w, generator=gen),
        "visual.positional_embedding": 0.5 * torch.randn(grid * grid + 1, w, generator=gen),
        "visual.proj": torch.randn(w, w, generator=gen) / math.sqrt(w),
        "visual.conv1.weight": torch.randn(w, 3, PATCH, PATCH, generator=gen) / math.sqrt(3 * PATCH * PATCH),
        "token_embedding.weight": torch.randn(CLIP_VOCAB, w, generator=gen),
        "positional_embedding": 0.5 * torch.randn(CONTEXT, w, generator=gen),
        "text_projection": torch.randn(w, w, generator=gen) / math.sqrt(w),
        "logit_scale": torch.tensor(math.log(100.0)),
    }
    for name in ("visual.ln_pre", "visual.ln_post", "ln_final"):
        sd[f"{name}.weight"], sd[f"{name}.bias"] = _norm(gen, w)
    for i in range(layers):
        sd.update(_resblock(gen, f"visual.transformer.resblocks.{i}.", w, 2 * w))
        sd.update(_resblock(gen, f"transformer.resblocks.{i}.", w, 2 * w))
    return sd


@pytest.fixture(scope="session")
def open_clip_state_dict():
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


TEXT_WIDTH = 64
TEXT_HEADS = 2
TEXT_POSITIONS = 40


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


def make_head_state_dict(gen, widths, prefix="layers."):
    sd = {}
    for index, (a, b) in zip((0, 2, 4, 6, 7), zip(widths[:-1], widths[1:])):
        sd[f"{prefix}{index}.weight"], sd[f"{prefix}{index}.bias"] = _linear(gen, b, a, gain=1.0)
    return sd


def make_imagereward_state_dict(vocab: int, seed: int = 1, layers: int = 2) -> dict[str, torch.Tensor]:
    """ImageReward.pt's layout: ViT 128 wide (32 px, 8 px patches), BERT 64 wide with cross-attention."""
    gen = torch.Generator().manual_seed(seed)
    w, t, grid = WIDTH, TEXT_WIDTH, IMAGE // PATCH
    v = "blip.visual_encoder."
    sd = {
        f"{v}cls_token": torch.randn(1, 1, w, generator=gen),
        f"{v}pos_embed": 0.5 * torch.randn(1, grid * grid + 1, w, generator=gen),
        f"{v}patch_embed.proj.weight": torch.randn(w, 3, PATCH, PATCH, generator=gen) / math.sqrt(3 * PATCH * PATCH),
        f"{v}patch_embed.proj.bias": 0.1 * torch.randn(w, generator=gen),
    }
    sd[f"{v}norm.weight"], sd[f"{v}norm.bias"] = _norm(gen, w)
    for i in range(layers):
        sd.update(_vit_block(gen, f"{v}blocks.{i}.", w, 2 * w))
    e = "blip.text_encoder."
    sd[f"{e}embeddings.word_embeddings.weight"] = torch.randn(vocab, t, generator=gen)
    sd[f"{e}embeddings.position_embeddings.weight"] = 0.5 * torch.randn(TEXT_POSITIONS, t, generator=gen)
    sd[f"{e}embeddings.position_ids"] = torch.arange(TEXT_POSITIONS).unsqueeze(0)
    sd[f"{e}embeddings.LayerNorm.weight"], sd[f"{e}embeddings.LayerNorm.bias"] = _norm(gen, t)
    for i in range(layers):
        p = f"{e}encoder.layer.{i}."
        sd.update(_bert_attention(gen, f"{p}attention.", t, t))
        sd.update(_bert_attention(gen, f"{p}crossattention.", t, w))
        sd[f"{p}intermediate.dense.weight"], sd[f"{p}intermediate.dense.bias"] = _linear(gen, 2 * t, t)
        sd[f"{p}output.dense.weight"], sd[f"{p}output.dense.bias"] = _linear(gen, t, 2 * t)
        sd[f"{p}output.LayerNorm.weight"], sd[f"{p}output.LayerNorm.bias"] = _norm(gen, t)
    # BLIP pre-training projections, present in the real file and unused by ImageReward
    sd["blip.vision_proj.weight"], sd["blip.vision_proj.bias"] = _linear(gen, 32, w)
    sd["blip.text_proj.weight"], sd["blip.text_proj.bias"] = _linear(gen, 32, t)
    sd.update(make_head_state_dict(gen, [t, 48, 16, 8, 4, 1], prefix="mlp.layers."))
    return sd


MED_CONFIG = {"architectures": ["BertModel"], "hidden_size": TEXT_WIDTH, "num_attention_heads": TEXT_HEADS,
              "num_hidden_layers": 2, "layer_norm_eps": 1e-12, "hidden_act": "gelu", "pad_token_id": 0,
              "add_cross_attention": True, "encoder_width": WIDTH}


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
    """A transformers CLIPModel folder with its tokenizer (the layout of openai/clip-vit-large-patch14)."""
    from transformers import CLIPModel, CLIPTokenizer

    torch.manual_seed(2)
    model = CLIPModel(tiny_clip_config(hidden_act="quick_gelu"))
    with torch.no_grad():  # larger weights than the default init, for O(1) differences between inputs
        for name, param in model.named_parameters():
            if name.endswith("weight") and param.ndim == 2:
                param.normal_(0, 1.5 / math.sqrt(param.shape[1]))
    folder = tmp_path_factory.mktemp("clip_model")
    model.save_pretrained(folder)
    CLIPTokenizer.from_pretrained(clip_tokenizer_dir).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def aesthetic_heads(tmp_path_factory):
    """Both LAION head files (48-d input for the tiny CLIP) in one folder."""
    folder = tmp_path_factory.mktemp("aesthetic")
    for seed, name in enumerate(("sac+logos+ava1-l14-linearMSE.pth", "ava+logos-l14-linearMSE.pth")):
        gen = torch.Generator().manual_seed(10 + seed)
        torch.save(make_head_state_dict(gen, [48, 40, 16, 8, 4, 1]), folder / name)
    return folder


@pytest.fixture
def images():
    """Two 32 x 32 images in [0, 1] (the tiny models' input size), requiring grad."""
    gen = torch.Generator().manual_seed(3)
    return torch.rand(2, 3, IMAGE, IMAGE, generator=gen).requires_grad_(True)
