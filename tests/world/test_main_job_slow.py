"""The README's main job, end to end (issue: the built-in world). About 9 minutes on 2 idle
cores: run with ``python -m pytest -m slow``. It asserts the world's two bars on the 960 images
the main job reports: +0.05 overall, fidelity at most 1.25x the base's (docs/world.md, "The main
job's numbers"). It runs on 2 threads, as the documented runs did: the thread count changes the
floating-point order and so the whole run."""

import json

import pytest

from hypernoise.cli.main import main


@pytest.mark.slow
def test_main_job_improves_world_geneval_by_five_points_and_stays_faithful(tmp_path, capsys):
    out = tmp_path / "main"
    assert main(["train", "--threads", "2", "--no-progress", "--out", str(out)]) == 0
    with capsys.disabled():
        print(capsys.readouterr().out)
    scores = json.loads((out / "before_after.json").read_text())
    base, hn = scores["base"], scores["hypernoise"]
    assert hn["geneval"]["overall"] >= base["geneval"]["overall"] + 0.05
    assert hn["fidelity"] <= 1.25 * base["fidelity"]  # as close to real images as the base, give or take 25 %
    assert base["n_images"] == 960
    assert hn["cost"]["nfe_per_image"] == base["cost"]["nfe_per_image"] + 1
    assert (out / "samples" / "compare.png").is_file()
