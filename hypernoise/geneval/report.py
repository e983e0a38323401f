"""What GenEval saw, as pictures: the records of a scored folder drawn over their images.

    write_report(records, out_dir) -> [paths]

    OUT/report/<task>.png   up to ``per_task`` images of the task, the wrong ones first: each tile the
                            image with the boxes GenEval kept (class and score), framed red (wrong) or
                            green (correct), its prompt and the official reason under it
    OUT/report/tasks.png    each task's accuracy as a bar, and overall (the mean of the six)

    write_comparison({method: records}, path)   one row per image slot, one column per method,
                                                the images a method fixes first

A record is the official one (``rules.image_record``): filename, tag, prompt, correct, reason,
details (the kept boxes per class, a JSON string of ``[x1, y1, x2, y2, score]`` lists in image
pixels). The image is read from the record's ``filename``; a record whose image is gone is left
out. Nothing here runs a model: a report can be drawn again from ``results.jsonl`` alone.
"""

from __future__ import annotations

import json
import textwrap
from itertools import islice
from pathlib import Path
from typing import Mapping, Optional, Sequence

from hypernoise.geneval.metadata import TASK_HEADERS, TASKS

REPORT_DIR = "report"
TILE = 224  # px: the image's longer side in a tile
CAPTION_LINES = 4
WRONG, CORRECT = (205, 40, 40), (40, 160, 70)
FRAME = 5
#: box colours, one per class in order of appearance in a record
PALETTE = [(255, 200, 0), (0, 190, 255), (255, 90, 200), (120, 255, 120), (255, 140, 40), (170, 120, 255)]


def write_report(records: Sequence[dict], out_dir, per_task: int = 12, columns: int = 4) -> list[Path]:
    """Draw ``OUT/report/<task>.png`` for every task with records, and ``OUT/report/tasks.png``;
    returns the paths written."""
    folder = Path(out_dir) / REPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    by_task: dict[str, list[dict]] = {}
    for record in records:
        by_task.setdefault(record["tag"], []).append(record)
    written = []
    for tag in sorted(by_task, key=lambda t: (TASKS.index(t) if t in TASKS else len(TASKS), t)):
        chosen = sorted(by_task[tag], key=lambda r: bool(r["correct"]))  # stable: wrong first, in file order
        tiles = list(islice((t for t in map(_tile, chosen) if t is not None), per_task))  # opens per_task images
        if tiles:
            path = folder / f"{tag}.png"
            _grid(tiles, columns).save(path)
            written.append(path)
    if by_task:
        written.append(_task_bars(by_task, folder / "tasks.png"))
    return written


def write_comparison(records: Mapping[str, Sequence[dict]], path, rows: int = 8) -> Optional[Path]:
    """One row per image that every method made (the same prompt and seed: records matched by their
    filename's ``<index>/samples/<seed>.png``), one column per method, named on top. Rows where the
    first method is wrong and another right come first (where a method fixes the first), then rows
    whose verdicts differ, then the rest, each group in file order. None when no image is shared."""
    from PIL import Image, ImageDraw

    methods = list(records)
    keyed = [{_image_key(r): r for r in records[m]} for m in methods]
    shared = [k for k in keyed[0] if all(k in other for other in keyed[1:])]

    def group(key) -> tuple[bool, bool]:
        verdicts = [bool(d[key]["correct"]) for d in keyed]
        return (verdicts[0] or not any(verdicts[1:]), len(set(verdicts)) == 1)

    lines = []
    for key in sorted(shared, key=group):
        tiles = [_tile(d[key]) for d in keyed]
        if all(t is not None for t in tiles):
            lines.append(tiles)
        if len(lines) == rows:
            break
    if not lines:
        return None
    w, h = lines[0][0].size
    header = 24
    sheet = Image.new("RGB", (w * len(methods), header + h * len(lines)), "white")
    draw = ImageDraw.Draw(sheet)
    font = _font(16)
    for j, method in enumerate(methods):
        draw.text((j * w + (w - draw.textlength(method, font=font)) / 2, 4), method, fill=(0, 0, 0), font=font)
    for i, tiles in enumerate(lines):
        for j, tile in enumerate(tiles):
            sheet.paste(tile, (j * w, header + i * h))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return Path(path)


def _image_key(record: dict) -> tuple:
    """``(<index>, <seed>.png)`` of a record's filename: the same image slot under any output folder."""
    parts = Path(record["filename"]).parts
    return (parts[-3], parts[-1]) if len(parts) >= 3 else tuple(parts)


def boxes(record: dict) -> list[tuple[str, list[float]]]:
    """(class, [x1, y1, x2, y2, score]) for every box the record kept, in the record's order."""
    try:
        details = json.loads(record.get("details") or "{}")
    except ValueError:
        return []
    return [(name, list(map(float, box))) for name, kept in details.items() for box in kept if len(box) >= 4]


def annotate(image, record: dict):
    """The image (PIL) with the record's kept boxes drawn, each labelled with its class and score."""
    from PIL import ImageDraw

    image = image.convert("RGB").copy()
    draw = ImageDraw.Draw(image)
    width = max(1, round(max(image.size) / 160))
    colours = {}
    for name, box in boxes(record):
        colour = colours.setdefault(name, PALETTE[len(colours) % len(PALETTE)])
        draw.rectangle(box[:4], outline=colour, width=width)
        label = name + (f" {box[4]:.2f}" if len(box) > 4 else "")
        font = _font(max(12, max(image.size) // 18))  # readable once the tile shrinks the image
        x, y = box[0] + width, box[1] + width
        draw.rectangle(draw.textbbox((x, y), label, font=font), fill=colour)  # a label on its class colour
        draw.text((x, y), label, fill=(0, 0, 0), font=font)
    return image


def _tile(record: dict):
    """The record's annotated image scaled into a TILE square, framed in the verdict's colour, captioned."""
    from PIL import Image, ImageDraw, ImageOps

    path = Path(record["filename"])
    if not path.is_file():
        return None
    with Image.open(path) as image:
        picture = ImageOps.contain(annotate(image, record), (TILE, TILE))
    verdict_colour = CORRECT if record["correct"] else WRONG
    line_h, side = 15, TILE + 2 * FRAME
    tile = Image.new("RGB", (side, side + CAPTION_LINES * line_h + 4), "white")
    left, top = FRAME + (TILE - picture.width) // 2, FRAME + (TILE - picture.height) // 2
    tile.paste(verdict_colour, (left - FRAME, top - FRAME, left + picture.width + FRAME, top + picture.height + FRAME))
    tile.paste(picture, (left, top))
    prompt = textwrap.wrap(record.get("prompt", ""), 34)[:2]
    verdict = textwrap.wrap("correct" if record["correct"] else "wrong: " + (record.get("reason") or ""), 34)
    draw = ImageDraw.Draw(tile)
    for i, line in enumerate((prompt + verdict)[:CAPTION_LINES]):
        draw.text((FRAME, side + 2 + i * line_h), line, fill=(0, 0, 0) if i < len(prompt) else verdict_colour,
                  font=_font(12))
    return tile


def _grid(tiles: list, columns: int):
    from PIL import Image

    columns = min(columns, len(tiles))
    rows = -(-len(tiles) // columns)
    w, h = tiles[0].size
    sheet = Image.new("RGB", (columns * w, rows * h), "white")
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % columns) * w, (i // columns) * h))
    return sheet


def _task_bars(by_task: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tags = [t for t in TASKS if t in by_task] + [t for t in by_task if t not in TASKS]
    accuracy = [sum(bool(r["correct"]) for r in by_task[t]) / len(by_task[t]) for t in tags]
    overall = sum(accuracy) / len(accuracy)
    fig, ax = plt.subplots(figsize=(1.2 * len(tags) + 2.4, 3.2))
    labels = [TASK_HEADERS.get(t, t) for t in tags] + ["overall"]
    bars = ax.bar(labels, accuracy + [overall], color=["#4a7fb5"] * len(tags) + ["#2d3e50"])
    for bar, value, n in zip(bars, accuracy + [overall], [len(by_task[t]) for t in tags] + [None]):
        ax.text(bar.get_x() + bar.get_width() / 2, value + 0.02, f"{value:.2f}" + (f"\n({n})" if n else ""),
                ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("accuracy")
    ax.set_title(f"GenEval: {sum(len(v) for v in by_task.values())} images")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


_FONTS: dict = {}


def _font(size: int) -> Optional[object]:
    """Pillow's own scalable font (no font file shipped or read from the system)."""
    from PIL import ImageFont

    if size not in _FONTS:
        try:
            _FONTS[size] = ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1: the fixed bitmap font
            _FONTS[size] = ImageFont.load_default()
    return _FONTS[size]
