"""GenEval in plain PyTorch: the paper's metric, from the official checkpoints, without mmdetection.

GenEval (Ghosh et al., 2023; github.com/djghosh13/geneval) scores an image against its prompt's
metadata with an object detector (Mask2Former Swin-S, COCO instance) and a CLIP colour classifier,
then fixed rules. The parts, one module each (networks apart from rules, as the original keeps them):

    checkpoint     the official mmdet 2.x ``.pth`` read as it is (one key table), or a converted folder
    preprocess     mmdet's test pipeline: keep-ratio resize as OpenCV's bilinear, normalise, pad
    swin / pixel_decoder / head / detector
                   the detector: Swin-S, deformable-attention pixel decoder, masked-attention decoder
    postprocess    mmdet's instance post-processing -> (bboxes, masks) per class
    colour         the CLIP ViT-L/14 colour classifier (open_clip preprocessing, clip_benchmark's rule)
    rules          ``evaluate_images.py``'s decision rules: ``judge(image, detections, metadata)``
    metadata       the 553 official prompts and the 80 class names (shipped, MIT)
    scoring        a folder in GenEval's layout -> results.jsonl and the summary; the evaluation judge
    report         what GenEval saw: per task a grid of the images with their kept boxes and verdicts

Names are exported lazily, so ``import hypernoise.geneval`` loads no network code.
"""

from __future__ import annotations

import importlib

#: exported name -> the module that defines it (imported on first use, PEP 562)
_EXPORTS = {
    "Detector": "hypernoise.geneval.detector",
    "load_detector": "hypernoise.geneval.detector",
    "judge": "hypernoise.geneval.rules",
    "GenEvalOptions": "hypernoise.geneval.rules",
    "COLORS": "hypernoise.geneval.rules",
    "ColourClassifier": "hypernoise.geneval.colour",
    "load_colour_classifier": "hypernoise.geneval.colour",
    "convert_detector": "hypernoise.geneval.checkpoint",
    "Scorer": "hypernoise.geneval.scoring",
    "GenEvalJudge": "hypernoise.geneval.scoring",
    "score_folder": "hypernoise.geneval.scoring",
    "summarize": "hypernoise.geneval.scoring",
    "read_image": "hypernoise.geneval.scoring",
    "read_records": "hypernoise.geneval.scoring",
    "write_report": "hypernoise.geneval.report",
    "write_comparison": "hypernoise.geneval.report",
    "CLASSNAMES": "hypernoise.geneval.metadata",
    "load_metadata": "hypernoise.geneval.metadata",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
