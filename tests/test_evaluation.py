"""evaluate(): every method on the same noise, results.json / per_prompt.jsonl / GenEval layout."""

import json

import pytest
import torch

from hypernoise.adapter import save_adapter
from hypernoise.errors import ConfigError, UnknownNameError
from hypernoise.evaluation import EvalConfig, evaluate
from hypernoise.generators import build_generator
from hypernoise.hypernet import LoRAHypernetwork, LoraSettings
from hypernoise.io import read_prompt_records
from hypernoise.methods.generate import generate_images
from hypernoise.methods.reno import RenoConfig

PROMPTS = ["a red square", "a blue circle", "a photo"]


def _images(folder):
    from PIL import Image
    import numpy as np

    return {p.relative_to(folder).as_posix(): np.asarray(Image.open(p)) for p in sorted(folder.glob("*/samples/*.png"))}


def test_base_evaluation_writes_results_per_prompt_and_geneval_layout(tiny_generator, tmp_path):
    cfg = EvalConfig(method="base", seeds=(0, 1), reward="redness", geneval_layout=True, batch_size=4)
    res = evaluate(tiny_generator, PROMPTS, cfg, tmp_path, records=[{"prompt": p, "tag": "t"} for p in PROMPTS])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == res
    assert saved["method"] == "base" and saved["generator"] == "tiny"
    assert saved["n_prompts"] == 3 and saved["n_images"] == 6
    assert set(saved["rewards"]) == {"redness"}
    assert saved["cost"]["nfe_per_image"] == tiny_generator.default_steps
    assert saved["cost"]["seconds_per_image"] > 0
    rows = [json.loads(l) for l in (tmp_path / "per_prompt.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in rows] == PROMPTS and all(len(r["rewards"]["redness"]) == 2 for r in rows)
    mean = sum(sum(r["rewards"]["redness"]) for r in rows) / 6
    assert saved["rewards"]["redness"] == pytest.approx(mean)
    assert json.loads((tmp_path / "00001" / "metadata.jsonl").read_text()) == {"prompt": "a blue circle", "tag": "t"}
    assert sorted(_images(tmp_path)) == [f"{i:05d}/samples/{s:05d}.png" for i in range(3) for s in (0, 1)]


def test_evaluate_and_generate_start_from_the_same_noise(tiny_generator, tmp_path):
    evaluate(tiny_generator, PROMPTS[:2], EvalConfig(seeds=(3,), reward="redness", geneval_layout=True), tmp_path)
    direct = generate_images(tiny_generator, PROMPTS[:2], [3])
    from hypernoise.methods.generate import to_pil
    import numpy as np

    got = _images(tmp_path)
    assert np.array_equal(got["00000/samples/00003.png"], np.asarray(to_pil(direct[0])))
    assert np.array_equal(got["00001/samples/00003.png"], np.asarray(to_pil(direct[1])))


def test_a_repeated_prompt_gets_fresh_seeds_not_copies(tiny_generator, tmp_path):
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0]]
    evaluate(tiny_generator, prompts, EvalConfig(seeds=(3, 4), reward="redness", geneval_layout=True), tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "per_prompt.jsonl").read_text().splitlines()]
    assert [r["seeds"] for r in rows] == [[3, 4], [3, 4], [5, 6]]
    got = _images(tmp_path)
    from hypernoise.methods.generate import to_pil
    import numpy as np

    again = generate_images(tiny_generator, [PROMPTS[0]], [5])[0]
    assert np.array_equal(got["00002/samples/00005.png"], np.asarray(to_pil(again)))
    assert not np.array_equal(got["00002/samples/00005.png"], got["00000/samples/00003.png"])


def test_reno_and_best_of_n_beat_base_on_their_reward(tiny_generator, tmp_path):
    common = dict(seeds=(0, 1), reward="redness")
    base = evaluate(tiny_generator, PROMPTS, EvalConfig(method="base", **common))
    reno = evaluate(tiny_generator, PROMPTS, EvalConfig(method="reno", reno=RenoConfig(iters=6, lr=1.0), **common))
    bon = evaluate(tiny_generator, PROMPTS, EvalConfig(method="best-of-n", n=4, **common))
    assert reno["rewards"]["redness"] > base["rewards"]["redness"]
    assert bon["rewards"]["redness"] > base["rewards"]["redness"]
    steps = tiny_generator.default_steps
    assert reno["cost"]["nfe_per_image"] == (6 + 5) * steps
    assert bon["cost"]["nfe_per_image"] == 4 * steps


def test_hypernoise_evaluation_loads_the_adapter(tmp_path):
    gen = build_generator("tiny")
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=4))
    for p in hyper.trainable_parameters():
        torch.nn.init.normal_(p, std=0.05)
    save_adapter(tmp_path / "adapter", hyper, gen)
    fresh = build_generator("tiny")
    base = evaluate(fresh, PROMPTS, EvalConfig(method="base", seeds=(0,), reward="redness"))
    # an adapter passed to another method is not loaded: g stays the base model
    again = evaluate(fresh, PROMPTS, EvalConfig(method="base", adapter=str(tmp_path / "adapter"), seeds=(0,), reward="redness"))
    assert again["rewards"] == base["rewards"]
    hn = evaluate(fresh, PROMPTS, EvalConfig(method="hypernoise", adapter=str(tmp_path / "adapter"), seeds=(0,), reward="redness"))
    assert hn["rewards"]["redness"] != base["rewards"]["redness"]
    assert hn["cost"]["nfe_per_image"] == base["cost"]["nfe_per_image"] + 1


@pytest.mark.parametrize("kwargs, error", [
    ({"method": "magic"}, UnknownNameError),
    ({"method": "hypernoise"}, ConfigError),
    ({"seeds": ()}, ConfigError),
    ({"batch_size": 0}, ConfigError),
])
def test_eval_config_rejects_bad_settings(kwargs, error):
    with pytest.raises(error):
        EvalConfig(**kwargs)


def test_prompt_records_keep_geneval_metadata(tmp_path):
    path = tmp_path / "meta.jsonl"
    path.write_text('{"tag": "counting", "include": [{"class": "cat", "count": 2}], "prompt": "a photo of two cats"}\nplain line\n')
    records = read_prompt_records(path)
    assert records[0]["tag"] == "counting" and records[0]["prompt"] == "a photo of two cats"
    assert records[1] == {"prompt": "plain line"}


def test_frechet_distance_is_zero_to_itself_and_the_squared_shift_of_means():
    from hypernoise.evaluation import frechet_distance

    a = torch.randn(2000, 3, generator=torch.Generator().manual_seed(0)).double()
    a = a - a.mean(0)  # centred, so that 2a keeps the mean
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a + torch.tensor([1.0, 2.0, 0.0], dtype=a.dtype), a) == pytest.approx(5.0, rel=1e-6)
    scaled = frechet_distance(2 * a, a)  # same mean, covariance 4x: tr(4C + C - 2 * 2C) = tr C
    assert scaled == pytest.approx(float(torch.cov(a.T).trace()), rel=1e-6)


def test_a_method_added_in_one_place_is_evaluated_with_no_other_change(tiny_generator, tmp_path):
    """docs/architecture.md's example: one runner with the shared signature, one registration."""
    from hypernoise.methods import METHODS
    from hypernoise.methods.base import Cost, MethodOutput, measure, register_method, sample

    @register_method("twice-test", help="the base generator at twice its steps")
    def run_twice(generator, reward, noise, prompts, config):
        steps = 2 * generator.nfe(config.num_steps)
        cost = Cost(generator_forward=float(steps))
        with measure(cost, noise.device, len(prompts)):
            images = sample(generator, None, noise, generator.encode(prompts), num_steps=steps).images
        return MethodOutput(images, cost, noise=noise)

    try:
        res = evaluate(tiny_generator, PROMPTS, EvalConfig(method="twice-test", seeds=(0,), reward="redness"), tmp_path)
        base = evaluate(tiny_generator, PROMPTS, EvalConfig(method="base", seeds=(0,), reward="redness",
                                                            num_steps=2 * tiny_generator.default_steps))
    finally:
        METHODS._factories.pop("twice-test"), METHODS._help.pop("twice-test")
    assert res["cost"]["generator_forward"] == 2 * tiny_generator.default_steps
    assert res["rewards"] == base["rewards"]  # the same images as the base at twice the steps


def _interrupt_at(monkeypatch, at: int):
    """``evaluation.seeded_noise`` raises KeyboardInterrupt on its ``at``-th call, as a signal would."""
    import hypernoise.evaluation

    real, calls = hypernoise.evaluation.seeded_noise, []

    def wrapped(*args, **kwargs):
        calls.append(1)
        if len(calls) == at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(hypernoise.evaluation, "seeded_noise", wrapped)


def test_an_interrupted_evaluation_resumes_to_the_uninterrupted_results(tmp_path, monkeypatch, capsys):
    from hypernoise.cli.main import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of a red circle\na photo of a blue square\na photo of a green triangle\n")
    argv = ["evaluate", "--generator", "shapes", "--prompts", str(prompts), "--seeds", "0,1", "--batch-size", "2",
            "--geneval-layout", "--no-progress", "--threads", "1"]
    assert main(argv + ["--out", str(tmp_path / "full")]) == 0
    with monkeypatch.context() as m:
        _interrupt_at(m, 5)  # one batch per prompt: prompt 3 is interrupted
        assert main(argv + ["--out", str(tmp_path / "part")]) == 130
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "first 2 of 3 prompts" in line and "--resume latest" in line, line
    assert main(argv + ["--out", str(tmp_path / "part"), "--resume"]) == 0
    full, part = (json.loads((tmp_path / n / "results.json").read_text()) for n in ("full", "part"))
    assert "partial" not in part and part["n_images"] == full["n_images"] == 6
    assert part["rewards"] == full["rewards"] and part["geneval"] == full["geneval"]
    assert part["fidelity"] == pytest.approx(full["fidelity"], rel=0.05)  # resumed images read back from PNGs
    rows = {n: (tmp_path / n / "per_prompt.jsonl").read_text() for n in ("full", "part")}
    assert rows["part"] == rows["full"]
    assert _images(tmp_path / "part").keys() == _images(tmp_path / "full").keys()


def test_a_resume_with_other_settings_is_refused_naming_what_differs(tmp_path, monkeypatch, capsys):
    from hypernoise.cli.main import main

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of a red circle\na photo of a blue square\n")
    argv = ["evaluate", "--generator", "shapes", "--prompts", str(prompts), "--batch-size", "2", "--geneval-layout",
            "--no-progress", "--threads", "1", "--out", str(tmp_path / "run")]
    with monkeypatch.context() as m:
        _interrupt_at(m, 4)
        assert main(argv + ["--seeds", "0,1"]) == 130
    before = (tmp_path / "run" / "per_image.jsonl").read_bytes()
    capsys.readouterr()
    assert main(argv + ["--seeds", "0,2", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot resume" in err and "--seeds" in err and len(err.splitlines()) == 1, err
    assert (tmp_path / "run" / "per_image.jsonl").read_bytes() == before


def test_an_external_judge_scores_every_image_in_batches(tiny_generator, tmp_path):
    """A judge passed to ``evaluate`` (GenEval for real generators) sees every image once, in the
    evaluation's batches, and its records reach per_prompt.jsonl and its own records file."""
    seen = []

    class Judge:
        records_file, has_fidelity = "judged.jsonl", False

        def evaluate_images(self, images, prompts):
            seen.append(len(prompts))
            return [{"filename": "x", "category": "t", "correct": p.startswith("a red")} for p in prompts]

        def summary(self, records):
            return {"overall": sum(r["correct"] for r in records) / len(records)}

        @staticmethod
        def public_record(record):
            return {k: v for k, v in record.items() if k != "category"}

    cfg = EvalConfig(seeds=(0, 1), reward="redness", batch_size=4, geneval_layout=True)
    res = evaluate(tiny_generator, PROMPTS, cfg, tmp_path, judge=Judge())
    assert seen == [4, 2] and res["geneval"] == {"overall": pytest.approx(1 / 3)} and "fidelity" not in res
    records = [json.loads(l) for l in (tmp_path / "judged.jsonl").read_text().splitlines()]
    assert [r["filename"] for r in records] == [str(tmp_path / f"{i:05d}" / "samples" / f"{s:05d}.png")
                                                for i in range(3) for s in (0, 1)]
    assert all("category" not in r for r in records)
