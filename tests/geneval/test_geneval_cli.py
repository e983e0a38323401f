"""The GenEval commands end to end on tiny models in the real layouts: ``hypernoise geneval``,
``hypernoise convert-geneval`` and ``hypernoise evaluate --benchmark geneval``.

The detector is a tiny checkpoint in the official mmdet 2.x layout and the CLIP a random ViT-L/14
folder (conftest), so the verdicts are arbitrary: what is checked is that the commands score what
the library's own parts score, that the evaluation's judge on generated tensors gives exactly the
records of ``hypernoise geneval`` on the PNGs the evaluation wrote, and the commands' contracts.
"""

import json

import numpy as np
import pytest
from PIL import Image

from hypernoise.cli.main import main
from hypernoise.geneval.metadata import load_metadata

#: one row per task of the shipped metadata (colour rows make the CLIP run)
ROWS = {tag: next(r for r in load_metadata() if r["tag"] == tag) for tag in ("colors", "position", "counting")}


def _layout(root, rows, per_prompt=2, size=(48, 40)):
    rng = np.random.default_rng(0)
    for i, row in enumerate(rows):
        folder = root / f"{i:05d}"
        (folder / "samples").mkdir(parents=True)
        (folder / "metadata.jsonl").write_text(json.dumps(row) + "\n")
        for j in range(per_prompt):
            pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / "samples" / f"{j:05d}.png")
    return root


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _last_line(err: str) -> str:
    lines = [l for l in err.splitlines() if l.strip()]
    assert lines and "Traceback" not in err, err
    return lines[-1]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return _layout(tmp_path_factory.mktemp("geneval") / "images", list(ROWS.values()), per_prompt=1)


def test_geneval_scores_a_folder_as_the_library_parts_do(images, tmp_path, tiny_detector_path, clip_folder, capsys):
    from hypernoise.geneval import load_colour_classifier, load_detector
    from hypernoise.geneval.rules import GenEvalOptions, image_record
    from hypernoise.geneval.scoring import find_samples, read_image

    out = tmp_path / "scores"
    argv = ["geneval", str(images), "--detector", str(tiny_detector_path), "--clip", str(clip_folder),
            "--threshold", "0.02", "--options", "counting_threshold=0.05", "--device", "cpu", "--threads", "1",
            "--batch-size", "1", "--no-progress", "--out", str(out)]  # one image at a time, as mmdet runs
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| overall |" in printed and "results.jsonl" in printed
    records = _records(out / "results.jsonl")
    options = GenEvalOptions(threshold=0.02, counting_threshold=0.05)
    detector = load_detector(tiny_detector_path, device="cpu")
    colour = load_colour_classifier(str(clip_folder), device="cpu", options=options)
    expected = []
    for s in find_samples(images):
        image = read_image(s.path)
        expected.append(image_record(s.filename, image, detector.detect([image])[0], s.metadata, colour, options))
    assert records == json.loads(json.dumps(expected))
    assert any(json.loads(r["details"]) for r in records)  # the low thresholds keep detections: the rules ran
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"] == 3 and set(summary["tasks"]) == set(ROWS)
    assert json.loads((out / "geneval.json").read_text())["options"]["threshold"] == 0.02
    report = sorted(p.name for p in (out / "report").iterdir())  # what GenEval saw, drawn from the records
    assert report == sorted({f"{r['tag']}.png" for r in records} | {"tasks.png"}) and "report/" in printed


@pytest.mark.parametrize("argv, message", [
    (["--threshold", "1.5"], "threshold"),
    (["--options", "nonsense=1"], "nonsense"),
    (["--crop", "1", "--options", "crop=yes"], None),  # the flag wins: accepted
])
def test_bad_rule_values_are_one_line_before_any_model_loads(images, tmp_path, argv, message, capsys):
    code = main(["geneval", str(images), "--detector", str(tmp_path / "missing.pth"), "--out", str(tmp_path / "o"),
                 "--no-progress"] + argv)
    err = _last_line(capsys.readouterr().err)
    assert code == 2
    # with a bad value the rule is named; with good ones the next problem is the missing checkpoint
    assert (message in err) if message else ("missing.pth" in err), err
    assert not (tmp_path / "o").exists()


def test_a_folder_that_is_not_genevals_layout_is_one_line(tmp_path, tiny_detector_path, capsys):
    (tmp_path / "pics").mkdir()
    assert main(["geneval", str(tmp_path / "pics"), "--detector", str(tiny_detector_path), "--out",
                 str(tmp_path / "o")]) == 2
    assert "expected <index>/metadata.jsonl" in _last_line(capsys.readouterr().err)


def test_convert_geneval_gives_the_same_scores(images, tmp_path, tiny_detector_path, clip_folder, capsys):
    folder = tmp_path / "detector"
    assert main(["convert-geneval", str(tiny_detector_path), "--out", str(folder)]) == 0
    assert main(["convert-geneval", str(tiny_detector_path), "--out", str(folder)]) == 2  # never overwritten
    assert "already holds" in _last_line(capsys.readouterr().err)
    common = ["--clip", str(clip_folder), "--threshold", "0.02", "--device", "cpu", "--threads", "1", "--no-progress"]
    for name, detector in (("pth", tiny_detector_path), ("folder", folder)):
        assert main(["geneval", str(images), "--detector", str(detector), *common, "--out", str(tmp_path / name)]) == 0
    strip = lambda path: [{k: v for k, v in r.items()} for r in _records(path)]
    assert strip(tmp_path / "pth" / "results.jsonl") == strip(tmp_path / "folder" / "results.jsonl")


def test_evaluate_benchmark_geneval_scores_what_it_writes(tmp_path, tiny_detector_path, clip_folder, capsys):
    """A row of the paper's table on a tiny SANA-Sprint: the judge's records of the generated
    tensors equal ``hypernoise geneval``'s records of the PNGs the evaluation wrote."""
    from hypernoise.generators.tiny import save_tiny_pipeline

    pipeline = save_tiny_pipeline("sana-sprint", tmp_path / "sana", seed=0)
    prompts = tmp_path / "meta.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in ROWS.values()))
    out = tmp_path / "eval"
    rules = ["--threshold", "0.02", "--counting-threshold", "0.05"]
    argv = ["evaluate", "--benchmark", "geneval", "--generator", "auto", "--pretrained", str(pipeline),
            "--prompts", str(prompts), "--seeds", "0,1", "--batch-size", "4", "--reward", "redness", "--detector", str(tiny_detector_path),
            "--clip", str(clip_folder), *rules, "--device", "cpu", "--threads", "1", "--no-progress"]
    assert main(argv + ["--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "geneval: overall" in printed and f"{out}/report/" in printed and (out / "report" / "tasks.png").is_file()
    results = json.loads((out / "results.json").read_text())
    assert set(results["geneval"]) == {"overall", "single_object", "two_object", "counting", "colors", "position",
                                       "color_attr"}
    assert results["n_images"] == 6 and results["geneval"]["single_object"] is None
    judged = _records(out / "results.jsonl")
    assert [r["filename"] for r in judged] == [f"{out}/{i:05d}/samples/{s:05d}.png" for i in range(3) for s in (0, 1)]
    assert main(["geneval", str(out), "--detector", str(tiny_detector_path), "--clip", str(clip_folder), *rules,
                 "--device", "cpu", "--threads", "1", "--no-progress", "--out", str(tmp_path / "rescored")]) == 0
    assert _records(tmp_path / "rescored" / "results.jsonl") == judged


def test_evaluate_benchmark_geneval_needs_the_detector_and_tagged_prompts(tmp_path, capsys):
    plain = tmp_path / "plain.txt"
    plain.write_text("a photo of a cat\n")
    assert main(["evaluate", "--benchmark", "geneval", "--generator", "shapes", "--out", str(tmp_path / "o")]) == 2
    assert "--detector" in _last_line(capsys.readouterr().err)
    assert main(["evaluate", "--benchmark", "geneval", "--prompts", str(plain), "--detector", "x.pth",
                 "--out", str(tmp_path / "o")]) == 2
    assert "'a photo of a cat' is not one (tag None" in _last_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


@pytest.mark.slow  # trains HyperNoise on a tiny SANA-Sprint, then four methods: ~1 min
def test_bench_on_a_real_generator_reports_genevals_overall(tmp_path, tiny_detector_path, clip_folder):
    from hypernoise.generators.tiny import save_tiny_pipeline

    pipeline = save_tiny_pipeline("sana-sprint", tmp_path / "sana", seed=0)
    prompts = tmp_path / "meta.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in list(ROWS.values())[:2]))
    train_prompts = tmp_path / "train.txt"
    train_prompts.write_text("a photo of a dog\na photo of a red car\n")
    out = tmp_path / "bench"
    argv = ["bench", "--benchmark", "geneval", "--generator", "auto", "--pretrained", str(pipeline),
            "--prompts", str(prompts), "--train-prompts", str(train_prompts), "--reward", "redness",
            "--steps", "1", "--curve-points", "1", "--seeds", "0", "--iters", "1", "--n", "2", "--no-frontier",
            "--no-finetune", "--detector", str(tiny_detector_path), "--clip", str(clip_folder), "--threshold", "0.02",
            "--device", "cpu", "--threads", "1", "--no-progress", "--out", str(out)]
    assert main(argv) == 0
    bench = json.loads((out / "bench.json").read_text())
    for method in ("base", "hypernoise", "reno", "best-of-n"):
        assert bench["quality"][method] == bench["methods"][method]["geneval"]["overall"]
        assert len(_records(out / method / "results.jsonl")) == 2
        assert (out / method / "00001" / "samples" / "00000.png").is_file()
        assert (out / method / "report" / "tasks.png").is_file()  # what GenEval saw of each method
    assert (out / "geneval_compare.png").is_file()  # the methods side by side
