"""mmdet 2.x's instance post-processing for Mask2Former, per image, in its output format.

    MaskFormerHead.simple_test            mask logits resized (bilinear) to the padded input size
    MaskFormerFusionHead.simple_test      cropped to the resized image, resized to the original size
    .instance_postprocess                 top-100 of softmax(class) without no-object over
                                          (query, class); binary mask = logit > 0; det score =
                                          class prob x mean sigmoid inside the mask; box = mask2bbox
    MaskFormer.simple_test + bbox2result  per class: boxes [N, 5] (x0, y0, x1, y1, score) and masks

Only the queries that reach the top-100 are upsampled (resizing is per query, so the result equals
resizing all of them).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from hypernoise.geneval.preprocess import ImageMeta

#: MaskFormerFusionHead test_cfg max_per_image
MAX_PER_IMAGE = 100
#: queries upsampled at once (bounds memory at the original size)
CHUNK = 16


def upsample_masks(mask_logits: torch.Tensor, meta: ImageMeta) -> torch.Tensor:
    """[N, h, w] logits at stride 4 -> [N, H_ori, W_ori]: bilinear (align_corners=False) to the
    padded input size, crop to the resized image, bilinear to the original size."""
    x = F.interpolate(mask_logits[:, None].float(), size=meta.pad_shape, mode="bilinear", align_corners=False)
    x = x[:, :, : meta.img_shape[0], : meta.img_shape[1]]
    return F.interpolate(x, size=meta.ori_shape, mode="bilinear", align_corners=False)[:, 0]


def mask2bbox(masks: torch.Tensor) -> torch.Tensor:
    """[N, H, W] bool -> [N, 4] float32 (x0, y0, x1 + 1, y1 + 1) of the True pixels; zeros when empty
    (mmdet ``core/mask/utils.py`` mask2bbox)."""
    cols, rows = masks.any(dim=1), masks.any(dim=2)  # [N, W], [N, H]

    def span(hit: torch.Tensor) -> tuple:
        first = hit.to(torch.uint8).argmax(dim=1)
        last = hit.shape[1] - 1 - hit.flip(1).to(torch.uint8).argmax(dim=1)
        return first, last + 1

    (x0, x1), (y0, y1) = span(cols), span(rows)
    boxes = torch.stack([x0, y0, x1, y1], dim=1).to(torch.float32)
    return torch.where(cols.any(dim=1, keepdim=True), boxes, torch.zeros_like(boxes))


def select_instances(class_logits: torch.Tensor, max_per_image: int = MAX_PER_IMAGE) -> tuple:
    """class_logits [Q, K + 1] -> (class probs [M], labels [M], queries [M]) of the top
    ``max_per_image`` (query, class) pairs, by descending probability (no-object dropped)."""
    probs = class_logits.float().softmax(dim=-1)[:, :-1]
    classes = probs.shape[1]
    top, index = probs.flatten().topk(min(max_per_image, probs.numel()))
    return top, index % classes, index // classes


def score_masks(mask_logits: torch.Tensor, meta: ImageMeta) -> tuple:
    """[U, h, w] stride-4 logits -> (binary masks [U, H_ori, W_ori] bool, mask scores [U], boxes [U, 4]):
    mask score = sum(sigmoid * binary) / (sum(binary) + 1e-6), as instance_postprocess."""
    binaries, scores, boxes = [], [], []
    for chunk in mask_logits.split(CHUNK):
        logits = upsample_masks(chunk, meta)
        binary = logits > 0
        inside = (logits.sigmoid() * binary).flatten(1).sum(1)
        scores.append(inside / (binary.flatten(1).sum(1) + 1e-6))
        binaries.append(binary)
        boxes.append(mask2bbox(binary))
    return torch.cat(binaries), torch.cat(scores), torch.cat(boxes)


def instance_results(class_logits: torch.Tensor, mask_logits: torch.Tensor, meta: ImageMeta,
                     max_per_image: int = MAX_PER_IMAGE) -> dict:
    """One image's instances as tensors: labels [M], queries [M], class probs [M], det scores [M],
    boxes [M, 4] and binary masks [M, H_ori, W_ori], ordered by descending class probability."""
    probs, labels, queries = select_instances(class_logits, max_per_image)
    unique, inverse = torch.unique(queries, return_inverse=True)
    binary, mask_scores, boxes = score_masks(mask_logits[unique], meta)
    return {"labels": labels, "queries": queries, "class_probs": probs,
            "scores": probs * mask_scores[inverse], "boxes": boxes[inverse], "masks": binary[inverse]}


def to_mmdet(instances: dict, num_classes: int) -> tuple:
    """mmdet 2.x's per-image result: (bboxes, masks), bboxes a list of ``num_classes`` float32
    arrays [N_c, 5] (x0, y0, x1, y1, score), masks a list of ``num_classes`` lists of bool [H, W]."""
    labels = instances["labels"].cpu().numpy()
    boxes = torch.cat([instances["boxes"], instances["scores"][:, None]], dim=1).float().cpu().numpy()
    masks = instances["masks"].cpu().numpy()
    bboxes = [boxes[labels == c] for c in range(num_classes)]
    per_class = [[masks[j] for j in np.flatnonzero(labels == c)] for c in range(num_classes)]
    return bboxes, per_class


def postprocess(class_logits: torch.Tensor, mask_logits: torch.Tensor, meta: ImageMeta,
                max_per_image: int = MAX_PER_IMAGE) -> tuple:
    """class_logits [Q, K + 1], mask_logits [Q, Hp/4, Wp/4] of one image -> mmdet's (bboxes, masks)."""
    instances = instance_results(class_logits, mask_logits, meta, max_per_image)
    return to_mmdet(instances, num_classes=class_logits.shape[-1] - 1)
