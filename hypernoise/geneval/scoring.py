"""Scoring images with GenEval: a folder in GenEval's layout, or images in memory (the judge).

    find_samples(images_dir) -> [Sample]                GenEval's layout, as evaluate_images.py reads it
    Scorer(detector, colour_fn, options)(images, metadata, filenames) -> [record]
    score_folder(images_dir, out_dir, scorer, resume) -> summary      (results.jsonl, summary.json)
    summarize(records) -> summary                        summary_scores.py's numbers
    GenEvalJudge(scorer, metadata)                       the evaluation judge (generators.base.Judge)

The layout (what ``evaluate --geneval-layout`` and GenEval's ``generation/diffusers_generate.py``
write): ``IMAGES_DIR/<index>/metadata.jsonl`` (one JSON object: tag, include/exclude clauses,
prompt) and ``IMAGES_DIR/<index>/samples/<seed>.png``. A record is the official one
(``evaluate_images.py``'s ``evaluate_image``): filename, tag, prompt, correct, reason, metadata
(the metadata as a JSON string), details (the kept boxes per class, as a JSON string).

``results.jsonl`` is appended one record per image as images finish, so an interrupted run keeps
every finished image and ``resume`` scores only the others; ``geneval.json`` records what defines
the run, and a resume with other settings is refused naming the first that differs.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import torch

from hypernoise.errors import ConfigError, InputFileError, Interrupted
from hypernoise.geneval.metadata import TASK_HEADERS, TASKS, row_problem  # noqa: F401  (TASK_HEADERS: re-exported)
from hypernoise.geneval.rules import GenEvalOptions, image_record
from hypernoise.images import to_pil
from hypernoise.io import write_json

RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
SETTINGS_FILE = "geneval.json"

#: evaluate_images.py main(): a sample is a file whose name matches this at its start
_SAMPLE_NAME = re.compile(r"\d+\.png")



@dataclass(frozen=True)
class Sample:
    """One image of a GenEval folder: its path, the name its record carries, its prompt's metadata."""

    path: Path
    filename: str
    metadata: dict


# ------------------------------------------------------------------------------- the layout
def find_samples(images_dir) -> list[Sample]:
    """Every image of ``images_dir`` in GenEval's layout, folder by folder (numeric order), then
    image by image: the folders and files ``evaluate_images.py`` main() scores (sub-folders named
    by digits holding ``metadata.jsonl``; their ``samples/`` files whose names start with
    ``<digits>.png``). A one-line ``InputFileError`` when there is none."""
    root = Path(images_dir)
    if not root.is_dir():
        raise InputFileError(f"images folder {images_dir} does not exist; pass the folder that holds GenEval's "
                             f"<index>/metadata.jsonl and <index>/samples/<seed>.png")
    samples = [s for folder in _index_folders(root) for s in _folder_samples(images_dir, folder)]
    if not samples:
        raise InputFileError(f"no images in GenEval's layout under {images_dir}: expected <index>/metadata.jsonl "
                             f"and <index>/samples/<seed>.png (what `hypernoise evaluate --geneval-layout` writes)")
    return samples


def _index_folders(root: Path) -> list[Path]:
    folders = [p for p in root.iterdir() if p.name.isdigit() and p.is_dir()]
    return sorted(folders, key=lambda p: (int(p.name), p.name))


def _folder_samples(images_dir, folder: Path) -> list[Sample]:
    metadata = read_metadata_file(folder / "metadata.jsonl")
    samples = folder / "samples"
    names = sorted((p.name for p in samples.iterdir() if _SAMPLE_NAME.match(p.name) and p.is_file()),
                   key=lambda n: (int(_SAMPLE_NAME.match(n).group(0)[:-4]), n)) if samples.is_dir() else []
    return [Sample(samples / n, os.path.join(str(images_dir), folder.name, "samples", n), metadata) for n in names]


def read_metadata_file(path: Path) -> dict:
    """A folder's ``metadata.jsonl``: one JSON object with at least ``tag`` and ``prompt``."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputFileError(f"{path} is missing: every <index> folder of GenEval's layout holds its prompt's "
                             f"metadata.jsonl") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputFileError(f"cannot read {path} ({e})") from None
    try:
        metadata = json.loads(text)
    except ValueError as e:
        raise InputFileError(f"{path} is not one JSON object ({e}); it should hold the prompt's row of GenEval's "
                             f"evaluation_metadata.jsonl") from None
    problem = row_problem(metadata)
    if problem:
        raise InputFileError(f"{path}: {problem}; it should hold the prompt's row of GenEval's "
                             f"evaluation_metadata.jsonl")
    return metadata


def read_image(path):
    """An image as GenEval sees it: EXIF orientation applied, RGB (a PIL image)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return ImageOps.exif_transpose(image).convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise InputFileError(f"cannot read the image {path} ({e}); remove or replace it") from None


# ------------------------------------------------------------------------------- scoring
class Scorer:
    """The detector, the colour classifier and the rules' options: PIL images and their metadata
    -> official records. ``detector.detect(images, batch_size)`` gives mmdet's per-image
    ``(bboxes, masks)``; ``colour_fn(image, objects, classname) -> [colour]`` is called only for
    colour clauses."""

    def __init__(self, detector, colour_fn: Optional[Callable] = None, options: Optional[GenEvalOptions] = None,
                 batch_size: int = 4):
        self.detector, self.colour_fn = detector, colour_fn
        self.options = options or GenEvalOptions()
        self.batch_size = batch_size

    def __call__(self, images: Sequence, metadata: Sequence[dict], filenames: Sequence[str]) -> list[dict]:
        detections = self.detector.detect(list(images), batch_size=self.batch_size)
        return [image_record(name, image, det, meta, self.colour_fn, self.options)
                for name, image, det, meta in zip(filenames, images, detections, metadata)]


def score_folder(images_dir, out_dir, scorer: Scorer, settings: Optional[dict] = None, resume: bool = False,
                 progress: bool = True) -> dict:
    """Score every image of ``images_dir`` into ``out_dir/results.jsonl`` (one record per image,
    appended as each batch finishes) and ``out_dir/summary.json``; returns the summary.

    ``settings``: what defines the run besides the images (detector, CLIP, options), written to
    ``geneval.json`` and checked on ``resume``, which keeps the records already written and scores
    the rest. Interrupted: the summary of what is finished is written marked ``"partial": true``
    and ``errors.Interrupted`` says how to go on."""
    out = Path(out_dir)
    samples = find_samples(images_dir)
    settings = {**(settings or {}), "options": asdict(scorer.options), "images": str(images_dir),
                "n_images": len(samples)}
    records = _resumed(out, settings) if resume else []
    if not records:
        write_json(out / SETTINGS_FILE, settings)
        (out / RESULTS_FILE).write_text("")
    done = {r["filename"] for r in records}
    todo = [s for s in samples if s.filename not in done]
    try:
        for batch in _batches(todo, scorer.batch_size, progress, initial=len(samples) - len(todo)):
            new = scorer([read_image(s.path) for s in batch], [s.metadata for s in batch], [s.filename for s in batch])
            _append(out / RESULTS_FILE, new)
            records += new
    except KeyboardInterrupt:
        summary = _write_summary(out, records, planned=len(samples))
        raise Interrupted(f"interrupted: {len(records)} of {len(samples)} images scored ({out}/{RESULTS_FILE}, "
                          f"summary marked \"partial\"); continue with `resume` latest --out {out}",
                          partial=summary) from None
    return _write_summary(out, records, planned=len(samples))


def _batches(samples: list, size: int, progress: bool, initial: int = 0) -> Iterable[list]:
    from tqdm.auto import tqdm

    with tqdm(total=initial + len(samples), initial=initial, desc="geneval", unit="img", disable=not progress,
              dynamic_ncols=True, delay=1) as bar:
        for start in range(0, len(samples), size):
            batch = samples[start : start + size]
            yield batch
            bar.update(len(batch))


def _append(path: Path, records: Sequence[dict]) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(json.dumps(r) + "\n" for r in records))
        f.flush()


def _resumed(out: Path, settings: dict) -> list[dict]:
    """The records of the run in ``out`` when it is the same run (else a one-line ConfigError); a
    record torn by a kill (an unparsable last line) is dropped from the file."""
    try:
        saved = json.loads((out / SETTINGS_FILE).read_text())
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise InputFileError(f"cannot read {out / SETTINGS_FILE} ({e}); pass `overwrite` to start afresh") from None
    for key, value in settings.items():
        if not isinstance(saved, dict) or saved.get(key) != value:
            raise ConfigError(f"cannot resume the run in {out}: `{key}` differs (the run: "
                              f"{_short(saved.get(key) if isinstance(saved, dict) else saved)}, now: {_short(value)}); "
                              f"pass the run's settings, or another `out`")
    return read_records(out / RESULTS_FILE, keep_torn=False)


def read_records(path, keep_torn: bool = True) -> list[dict]:
    """The records of a ``results.jsonl`` (a path or a string) up to the first line that is not one
    (a line torn by a kill); ``keep_torn=False`` also cuts the file there."""
    path = Path(path)
    rows, lines = [], path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            break
        if not isinstance(row, dict) or "filename" not in row:
            break
        rows.append(row)
    if not keep_torn and len(rows) < len(lines):
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return rows


def _short(value, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _write_summary(out: Path, records: Sequence[dict], planned: int) -> dict:
    summary = summarize(records)
    if len(records) < planned:
        summary.update(partial=True, n_images_planned=planned)
    write_json(out / SUMMARY_FILE, summary)
    return summary


# ------------------------------------------------------------------------------- the summary
def summarize(records: Sequence[dict]) -> dict:
    """summary_scores.py's numbers: images, prompts (distinct metadata), the fraction of correct
    images and of prompts with a correct image, each task's accuracy (tasks in order of first
    appearance, as ``groupby(sort=False)``), and overall = the mean of the task accuracies.
    ``geneval`` holds overall and the six tasks under their tags (None for a task with no image)."""
    tasks: dict[str, list[bool]] = {}
    prompts: dict[str, bool] = {}
    for r in records:
        tasks.setdefault(r["tag"], []).append(bool(r["correct"]))
        prompts[r["metadata"]] = prompts.get(r["metadata"], False) or bool(r["correct"])
    accuracy = {tag: sum(v) / len(v) for tag, v in tasks.items()}
    overall = sum(accuracy.values()) / len(accuracy) if accuracy else None
    n = len(records)
    return {"overall": overall,
            "tasks": {tag: {"accuracy": accuracy[tag], "correct": sum(v), "images": len(v)} for tag, v in tasks.items()},
            "images": n, "prompts": len(prompts),
            "correct_images": sum(bool(r["correct"]) for r in records) / n if n else None,
            "correct_prompts": sum(prompts.values()) / len(prompts) if prompts else None,
            "geneval": {"overall": overall, **{t: accuracy.get(t) for t in TASKS}}}


def format_summary(summary: dict) -> str:
    """The summary as the paper's Table 1 row (overall, then the six tasks), with summary_scores.py's
    counts under it."""
    scores = summary["geneval"]
    heads = ["overall"] + [TASK_HEADERS.get(t, t) for t in TASKS]
    cells = [_cell(scores["overall"])] + [_cell(scores.get(t)) for t in TASKS]
    widths = [max(len(h), len(c)) for h, c in zip(heads, cells)]
    row = lambda xs: "| " + " | ".join(x.rjust(w) for x, w in zip(xs, widths)) + " |"
    lines = [f"GenEval: {summary['images']} images, {summary['prompts']} prompts"
             + (f" (partial: {summary['images']} of {summary['n_images_planned']})" if summary.get("partial") else ""),
             row(heads), "|" + "|".join("-" * (w + 2) for w in widths) + "|", row(cells)]
    lines += [f"  {tag:<14} {t['accuracy']:.2%} ({t['correct']} / {t['images']})" for tag, t in summary["tasks"].items()]
    return "\n".join(lines)


def _cell(value) -> str:
    return "-" if value is None else f"{value:.3f}"


# ------------------------------------------------------------------------------- the judge
class GenEvalJudge:
    """GenEval as the judge of ``evaluation.evaluate`` (``generators.base.Judge``): images
    [N, 3, H, W] in [0, 1] and their prompts -> the official records, plus ``category`` (the
    task), each prompt's metadata looked up by its text. Images are scored as their PNGs would be
    (``images.to_pil``'s rounding), so scoring the written layout gives the same records. The
    evaluation names each record's PNG (``filename``) where it writes one, and writes the records
    to ``records_file`` in the official format (``public_record``)."""

    records_file = RESULTS_FILE
    has_fidelity = False

    def __init__(self, scorer: Scorer, metadata: Sequence[dict], settings: Optional[dict] = None):
        self.scorer, self.settings = scorer, dict(settings or {})
        self.by_prompt = {m["prompt"]: m for m in metadata}

    def describe(self) -> dict:
        """What defines the judge (checked when an evaluation resumes): its settings and options."""
        return {"judge": "geneval", **self.settings, "options": asdict(self.scorer.options)}

    def evaluate_images(self, images: torch.Tensor, prompts: Sequence[str]) -> list[dict]:
        missing = sorted({p for p in prompts if p not in self.by_prompt})
        if missing:
            raise ConfigError(f"GenEval has no metadata for the prompt {missing[0]!r} ({len(missing)} such); score "
                              f"GenEval's own prompts (evaluation_metadata.jsonl) or pass `prompts` in that format")
        records = []
        for start in range(0, len(prompts), self.scorer.batch_size):
            stop = start + self.scorer.batch_size
            pil = [to_pil(image) for image in images[start:stop]]
            names = [f"{i:05d}.png" for i in range(start, min(stop, len(prompts)))]
            records += self.scorer(pil, [self.by_prompt[p] for p in prompts[start:stop]], names)
        return [{**r, "category": r["tag"]} for r in records]

    @staticmethod
    def public_record(record: dict) -> dict:
        """A record as ``evaluate_images.py`` writes it (without the evaluation's ``category``)."""
        return {k: v for k, v in record.items() if k != "category"}

    def summary(self, records: Sequence[dict]) -> dict:
        return summarize(records)["geneval"]

    def fidelity(self, images: torch.Tensor, prompts: Sequence[str]) -> Optional[float]:
        """GenEval has no fidelity measure (None): the world's evaluator has one."""
        return None
