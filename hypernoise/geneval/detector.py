"""GenEval's object detector: mmdet 2.x Mask2Former Swin-S (COCO instances) in plain PyTorch.

    detector = load_detector("mask2former_swin-s-p4-w7-224_lsj_8x2_50e_coco.pth")  # or a converted folder
    results = detector.detect([pil_image, ...])       # per image: mmdet's (bboxes, masks)

``forward`` is the network alone (normalised, padded pixels -> last-layer logits);
``preprocess`` and ``detect`` add mmdet's test pipeline and instance post-processing. Results
equal mmdet's batch-1 runs: only images of the same padded size share a batch (mmdet pads a
batch to its largest image and does not mask the padding, so mixing sizes would change them).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from hypernoise.devices import DeviceLike, DtypeLike, parse_dtype, resolve_device
from hypernoise.errors import ConfigError
from hypernoise.geneval.checkpoint import DetectorConfig, check_against, read_detector_weights
from hypernoise.geneval.head import MaskedAttentionDecoder
from hypernoise.geneval.pixel_decoder import PixelDecoder
from hypernoise.geneval.postprocess import MAX_PER_IMAGE, postprocess
from hypernoise.geneval.preprocess import ImageLike, network_size, preprocess_image
from hypernoise.geneval.swin import SwinTransformer

#: images per forward in ``detect``
BATCH_SIZE = 4


@contextlib.contextmanager
def exact_float32(device: torch.device):
    """TF32 off for CUDA matmuls and convolutions while inside (parity is measured without it);
    the previous settings come back on exit."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


class Detector(nn.Module):
    """Swin backbone -> deformable-attention pixel decoder -> masked-attention decoder."""

    def __init__(self, config: DetectorConfig = DetectorConfig()):
        super().__init__()
        c = config
        self.config = c
        self.backbone = SwinTransformer(c.embed_dim, c.depths, c.swin_heads, c.window, c.patch, c.mlp_ratio)
        widths = [c.embed_dim * 2 ** i for i in range(len(c.depths))]
        strides = [c.patch * 2 ** i for i in range(len(c.depths))]
        self.pixel_decoder = PixelDecoder(widths, strides, c.feat_channels, c.encoder_layers, c.encoder_levels,
                                          c.encoder_heads, c.encoder_points, c.encoder_ffn, c.gn_groups)
        self.decoder = MaskedAttentionDecoder(c.feat_channels, c.decoder_layers, c.decoder_levels, c.decoder_heads,
                                              c.decoder_ffn, c.num_queries, c.num_classes)

    @property
    def device(self) -> torch.device:
        return self.decoder.query_feat.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.query_feat.weight.dtype

    def forward(self, pixel_values: torch.Tensor) -> tuple:
        """pixel_values [B, 3, H, W] (normalised, H and W multiples of 32; moved to the model's
        device and dtype) -> (class logits [B, Q, K + 1], mask logits [B, Q, H/4, W/4]) of the last
        decoder layer."""
        with exact_float32(self.device):
            feats = self.backbone(pixel_values.to(self.device, self.dtype))
            mask_features, maps = self.pixel_decoder(feats)
            return self.decoder(mask_features, maps)

    def preprocess(self, images: Sequence[ImageLike]) -> tuple:
        """PIL images or uint8 RGB arrays [H, W, 3] -> (pixel_values [B, 3, Hp, Wp] on the model's
        device and dtype, [ImageMeta]). All must pad to the same size (``detect`` groups them)."""
        prepared = [preprocess_image(image) for image in images]
        sizes = sorted({meta.pad_shape for _, meta in prepared})
        if len(sizes) > 1:
            raise ConfigError(f"images of different padded sizes {sizes[:3]} cannot share a batch without changing "
                              f"the results; pass them to detect(), which batches equal sizes")
        pixels = torch.stack([x for x, _ in prepared]).to(self.device, self.dtype)
        return pixels, [meta for _, meta in prepared]

    @torch.inference_mode()
    def detect(self, images: Sequence[ImageLike], batch_size: int = BATCH_SIZE,
               progress: Optional[Callable[[int, int], None]] = None, max_per_image: int = MAX_PER_IMAGE) -> list:
        """Images -> one mmdet 2.x result per image, in order: (bboxes, masks), bboxes a list of
        ``num_classes`` float32 arrays [N, 5] (x0, y0, x1, y1, score in original pixels), masks a
        list of ``num_classes`` lists of bool arrays [H, W] (100 masks at the original size per
        image: pass long lists in chunks). ``progress(done, total)`` is called after each batch."""
        if batch_size < 1:
            raise ConfigError(f"`batch_size` must be at least 1, got {batch_size}")
        results: list = [None] * len(images)
        for batch in _batches([network_size(image) for image in images], batch_size):
            pixels, metas = self.preprocess([images[i] for i in batch])
            class_logits, mask_logits = self(pixels)
            for row, (i, meta) in enumerate(zip(batch, metas)):
                results[i] = postprocess(class_logits[row], mask_logits[row], meta, max_per_image)
            if progress is not None:
                progress(sum(r is not None for r in results), len(results))
        return results


def _batches(sizes: Sequence[tuple], batch_size: int) -> list:
    """Indices grouped by padded input size (in order of first appearance), in chunks of ``batch_size``."""
    groups: dict = {}
    for i, size in enumerate(sizes):
        groups.setdefault(size, []).append(i)
    return [group[k:k + batch_size] for group in groups.values() for k in range(0, len(group), batch_size)]


def load_detector(path, device: DeviceLike = None, dtype: DtypeLike = None) -> Detector:
    """The detector from the official mmdet 2.x ``.pth`` or a folder written by ``convert_detector``,
    in eval mode on ``device`` (default: the first accelerator, else the CPU) in ``dtype``
    (default float32, the parity mode; bfloat16/float16 are faster and approximate)."""
    device = resolve_device(device)
    dtype = parse_dtype(dtype) or torch.float32
    config, weights = read_detector_weights(path)
    with torch.device("meta"):
        model = Detector(config)
    check_against(weights, model.state_dict(), path)
    model.load_state_dict(weights, assign=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)
