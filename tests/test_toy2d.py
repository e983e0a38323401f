"""The analytic 2-D world: the exact objective recovers the tilted noise distribution."""

import json

import numpy as np
import pytest

from hypernoise.toy2d import Toy2DConfig, run_toy2d


@pytest.mark.parametrize("reward", [pytest.param("halfplane", marks=pytest.mark.slow), "corner"])  # 30 s each
def test_exact_objective_defaults_reach_the_tilted_distribution(tmp_path, reward):
    metrics = run_toy2d(Toy2DConfig(reward=reward, progress=False, mc_samples=1_000_000), tmp_path)
    assert metrics["kl_to_tilted"] < 0.05
    assert metrics["mean_abs_error"] < 0.05
    assert metrics["reward_learned"] > metrics["reward_base"]
    data = np.load(tmp_path / "samples.npz")
    assert {k: data[k].shape for k in data.files} == {k: (20000, 2) for k in ("noise", "modulated", "base", "samples")}
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["kl_to_tilted"] == pytest.approx(metrics["kl_to_tilted"]) and "lipschitz_max" in saved
    assert (tmp_path / "toy2d.png").stat().st_size > 10_000
    assert (tmp_path / "adapter" / "hypernoise.json").is_file()


def _kl(tmp_path, objective, alpha):
    cfg = Toy2DConfig(reward="corner", objective=objective, alpha=alpha, steps=800, progress=False,
                      n_eval=8000, mc_samples=400_000)
    return run_toy2d(cfg, tmp_path / f"{objective}-{alpha}")["kl_to_tilted"]


@pytest.mark.slow  # four 800-step runs, ~40 s
def test_l2_objective_gap_to_the_exact_one_shrinks_as_alpha_grows(tmp_path):
    """The L2 objective drops tr J - log det(I + J): harmless in the mild-tilt regime only."""
    gaps = [_kl(tmp_path, "l2", a) - _kl(tmp_path, "exact", a) for a in (1.0, 8.0)]
    assert gaps[0] > 0.05        # strong tilt: the approximation costs real KL
    assert gaps[1] < gaps[0] / 4  # mild tilt: most of the gap is gone
