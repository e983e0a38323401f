"""The README's main job, end to end (issue: the built-in world). About 7 minutes on 2 idle
cores: run with ``python -m pytest -m slow``. Its fidelity is printed, not asserted: no setting
keeps it within 1.25x of the base's reliably yet (docs/world.md, "HyperNoise on this world")."""

import json

import pytest

from hypernoise.cli.main import main


@pytest.mark.slow
def test_main_job_improves_world_geneval_by_at_least_five_points(tmp_path, capsys):
    out = tmp_path / "main"
    assert main(["train", "--no-progress", "--out", str(out)]) == 0
    with capsys.disabled():
        print(capsys.readouterr().out)
    scores = json.loads((out / "before_after.json").read_text())
    base, hn = scores["base"], scores["hypernoise"]
    assert hn["geneval"]["overall"] >= base["geneval"]["overall"] + 0.05
    assert hn["cost"]["nfe_per_image"] == base["cost"]["nfe_per_image"] + 1
    assert (out / "samples" / "compare.png").is_file()
