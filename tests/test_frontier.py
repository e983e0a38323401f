"""The compute frontier (issue 21): nested budgets of ReNO and best-of-N, HyperNoise-initialised
ReNO, the Pareto front, and the bench's frontier outputs; on the tiny generator."""

import json
import shutil
from dataclasses import replace

import pytest
import torch

from hypernoise.adapter import save_adapter
from hypernoise.bench import BenchConfig, best_per_budget, frontier_summary, pareto_front, run_bench
from hypernoise.cli.main import main
from hypernoise.errors import ConfigError
from hypernoise.evaluation import EvalConfig
from hypernoise.generators import build_generator
from hypernoise.hypernet import LoRAHypernetwork, LoraSettings
from hypernoise.methods import METHODS, RunConfig
from hypernoise.methods.best_of_n import best_of_n
from hypernoise.methods.hypernoise import ModelConfig
from hypernoise.methods.hypernoise_reno import hypernoise_reno
from hypernoise.methods.reno import RenoConfig, reno
from hypernoise.presets import default_config
from hypernoise.rewards import build_reward

PROMPTS = ["a red square", "a blue circle", "two green triangles"]
SEEDS = [3, 4, 5]


def _hypernet(gen, std=None):
    hyper = LoRAHypernetwork(gen, LoraSettings(rank=4))
    if std is not None:  # a "trained" map: B != 0
        torch.manual_seed(0)
        for p in hyper.trainable_parameters():
            torch.nn.init.normal_(p, std=std)
    return hyper


def test_reno_k_nested_in_a_longer_run_is_a_run_of_k_iterations(tiny_generator):
    gen, reward = tiny_generator, build_reward("redness")
    noise = gen.sample_noise(3, seed=0)
    cfg = RenoConfig(iters=7, lr=1.0)
    out = reno(gen, reward, noise, PROMPTS, cfg, seeds=SEEDS, budgets=(2, 5, 7))
    assert sorted(out.budgets) == [2, 5, 7] and out.budgets[7] is out
    for k in (2, 5):
        alone = reno(gen, reward, noise, PROMPTS, RenoConfig(iters=k, lr=1.0), seeds=SEEDS)
        nested = out.budgets[k]
        assert torch.equal(nested.samples, alone.samples) and torch.equal(nested.noise, alone.noise)
        assert torch.equal(nested.reward, alone.reward)
        for name in ("generator_forward", "generator_backward", "reward_forward", "reward_backward"):
            assert getattr(nested.cost, name) == getattr(alone.cost, name), name
        assert 0 < nested.cost.seconds_per_image <= out.cost.seconds_per_image
    assert out.budgets[2].cost.seconds_per_image < out.budgets[5].cost.seconds_per_image
    with pytest.raises(ConfigError, match="at most the run's 7 iterations"):
        reno(gen, reward, noise, PROMPTS, cfg, budgets=(8,))


def test_reno_k_optimised_through_fewer_steps_renders_its_own_best_noise(tiny_generator):
    """K != S (FLUX's setting): each budget's best noise is rendered at S steps, its time added."""
    gen, reward = tiny_generator, build_reward("redness")
    noise = gen.sample_noise(3, seed=0)
    cfg = RenoConfig(iters=4, lr=1.0, optimize_steps=1, num_steps=2)
    out = reno(gen, reward, noise, PROMPTS, cfg, seeds=SEEDS, budgets=(2,))
    alone = reno(gen, reward, noise, PROMPTS, replace(cfg, iters=2), seeds=SEEDS)
    assert torch.equal(out.budgets[2].samples, alone.samples)
    assert torch.equal(out.budgets[2].extras["rendered_reward"], alone.extras["rendered_reward"])
    assert out.budgets[2].cost.generator_forward == alone.cost.generator_forward == 2 * 1 + 2


def test_best_of_n_nested_in_a_larger_draw_is_a_run_of_n(tiny_generator):
    gen, reward = tiny_generator, build_reward("redness")
    noise = gen.sample_noise(3, seed=0)
    seeds = [100, 101, 102]
    out = best_of_n(gen, reward, noise, PROMPTS, n=9, chunk=6, seed=seeds, budgets=(1, 2, 4, 9))
    assert out.budgets[9] is out
    for n in (1, 2, 4):
        alone = best_of_n(gen, reward, noise, PROMPTS, n=n, chunk=6, seed=seeds)
        nested = out.budgets[n]
        assert torch.equal(nested.extras["index"], alone.extras["index"])
        torch.testing.assert_close(nested.samples, alone.samples)  # batched differently: equal up to rounding
        torch.testing.assert_close(nested.extras["scores"], alone.extras["scores"])
        assert nested.cost.generator_forward == alone.cost.generator_forward == n * gen.default_steps
        assert nested.cost.reward_forward == n
    times = [out.budgets[n].cost.seconds_per_image for n in (1, 2, 4, 9)]
    assert times == sorted(times) and times[0] > 0
    # without budgets the chunks are as before: the same images as the nested run's full output
    torch.testing.assert_close(best_of_n(gen, reward, noise, PROMPTS, n=9, chunk=6, seed=seeds).samples, out.samples)


def test_hypernoise_reno_with_a_zero_hypernetwork_is_reno_exactly(tiny_generator):
    gen, reward = tiny_generator, build_reward("redness")
    noise = gen.sample_noise(3, seed=0)
    cfg = RenoConfig(iters=4, lr=1.0)
    plain = reno(gen, reward, noise, PROMPTS, cfg, seeds=SEEDS, budgets=(2,))
    hyper = _hypernet(gen)  # B = 0: f_phi = 0
    ours = hypernoise_reno(gen, reward, hyper, noise, PROMPTS, cfg, seeds=SEEDS, budgets=(2,))
    assert torch.equal(ours.samples, plain.samples) and torch.equal(ours.noise, plain.noise)
    assert torch.equal(ours.budgets[2].samples, plain.budgets[2].samples)
    assert torch.equal(ours.extras["reward_history"], plain.extras["reward_history"])


def test_hypernoise_reno_starts_from_the_hypernoise_image_and_counts_the_hypernetwork(tiny_generator):
    gen, reward = tiny_generator, build_reward("redness")
    noise = gen.sample_noise(3, seed=0)
    hyper = _hypernet(gen, std=0.05)
    run = METHODS.get("hypernoise-reno").run
    config = RunConfig(adapter=hyper, reno=RenoConfig(iters=3, lr=1.0), seeds=SEEDS, budgets=(1, 3))
    out = run(gen, reward, noise, PROMPTS, config)
    hn = METHODS.get("hypernoise").run(gen, reward, noise, PROMPTS, RunConfig(adapter=hyper))
    torch.testing.assert_close(out.budgets[1].samples, hn.samples, rtol=0, atol=1e-6)  # its first iterate
    torch.testing.assert_close(out.extras["start_noise"], hn.noise, rtol=0, atol=0)
    plain = reno(build_generator("tiny"), reward, noise, PROMPTS, RenoConfig(iters=3, lr=1.0), seeds=SEEDS)
    assert not torch.equal(out.samples, plain.samples)
    steps = gen.default_steps
    for k, point in ((1, out.budgets[1]), (3, out)):
        assert point.cost.hypernet_forward == 1
        assert point.cost.nfe_per_image == k * steps + (k - 1) * steps + 1
    assert out.budgets[1].cost.seconds_per_image < out.cost.seconds_per_image
    twice = run(gen, reward, noise, PROMPTS, RunConfig(adapter=hyper, passes=2, reno=RenoConfig(iters=1)))
    assert twice.cost.hypernet_forward == 2


def test_the_pareto_front_and_the_best_method_per_budget_on_hand_made_points():
    def pt(method, budget, q, s, nfe):
        return {"method": method, "budget": budget, "quality": q, "seconds_per_image": s, "nfe_per_image": nfe}

    points = [pt("base", 0, 0.35, 0.002, 2), pt("hypernoise", 1, 0.47, 0.004, 3),
              pt("best-of-n", 1, 0.35, 0.003, 2),   # the base's images, dearer in seconds, tied in NFEs
              pt("best-of-n", 2, 0.45, 0.005, 4),   # dominated by HyperNoise
              pt("best-of-n", 4, 0.55, 0.009, 8), pt("reno", 5, 0.55, 0.050, 18),  # ties best-of-4, dearer
              pt("reno", 50, 0.80, 0.300, 198)]
    assert pareto_front(points, "seconds_per_image") == [True, True, False, False, True, False, True]
    assert pareto_front(points, "nfe_per_image") == [True, True, True, False, True, False, True]
    best = best_per_budget(points, "nfe_per_image")  # the tie of base and best-of-1 keeps the first
    assert [(b["method"], b["budget"], b["from"], b["to"]) for b in best] == [
        ("base", 0, 2, 3), ("hypernoise", 1, 3, 8), ("best-of-n", 4, 8, 198), ("reno", 50, 198, None)]
    summary = frontier_summary([dict(p) for p in points] + [pt("hypernoise-reno", 5, 0.60, 0.055, 19)])
    assert summary["hypernoise_on_front"] is True
    assert summary["hypernoise_reno_vs_reno"] == [{
        "budget": 5, "reno": 0.55, "hypernoise-reno": 0.60, "gain": pytest.approx(0.05),
        "reno_seconds_per_image": 0.050, "hypernoise_reno_seconds_per_image": 0.055}]
    faster = [dict(p) for p in points] + [pt("best-of-n", 3, 0.50, 0.004, 6)]  # as fast as HyperNoise, better
    assert frontier_summary(faster)["hypernoise_on_front"] is False


def test_budgets_are_checked_in_the_evaluation_config():
    with pytest.raises(ConfigError, match="`budgets` apply to the methods that nest them"):
        EvalConfig(method="base", budgets=(1,))
    with pytest.raises(ConfigError, match="at most the run's 3 candidates"):
        EvalConfig(method="best-of-n", n=3, budgets=(1, 4))
    assert EvalConfig(method="reno", reno=RenoConfig(iters=5), budgets=(5, 2, 2)).budgets == (2, 5)


def test_a_tiny_bench_writes_the_frontier_and_its_plot(tmp_path):
    model = ModelConfig(generator="tiny")
    train = default_config(build_generator("tiny"), model=model, reward="redness", steps=2, batch_size=2,
                           optimizer="adamw", lr=0.01, progress=False)
    cfg = BenchConfig(model=model, seeds=(0,), reward="redness", train=train, curve_points=1, reno_iters=3, n=3,
                      batch_size=8, progress=False, reno_budgets=(1, 2, 50), hypernoise_reno_budgets=(1, 2))
    run_bench(cfg, tmp_path)
    bench = json.loads((tmp_path / "bench.json").read_text())
    points = bench["frontier"]
    assert [(p["method"], p["budget"]) for p in points] == [
        ("base", 0), ("hypernoise", 1), ("hypernoise", 2), ("hypernoise", 3), ("best-of-n", 1), ("best-of-n", 2),
        ("best-of-n", 3), ("reno", 1), ("reno", 2), ("reno", 3), ("hypernoise-reno", 1), ("hypernoise-reno", 2)]
    for p in points:
        for key in ("geneval", "reward", "fidelity", "nfe_per_image", "seconds_per_image", "peak_memory_mb",
                    "pareto_seconds", "pareto_nfe"):
            assert key in p, key
        assert p["seconds_per_image"] > 0
    by = {(p["method"], p["budget"]): p for p in points}
    assert by[("reno", 3)]["reward"] == sum(bench["methods"]["reno"]["rewards"].values())  # the full run
    assert by[("hypernoise", 2)]["nfe_per_image"] == by[("hypernoise", 1)]["nfe_per_image"] + 1
    assert by[("hypernoise-reno", 2)]["nfe_per_image"] == by[("reno", 2)]["nfe_per_image"] + 1
    assert [r["budget"] for r in bench["hypernoise_reno_vs_reno"]] == [1, 2]
    assert bench["best_per_budget"]["seconds_per_image"] and isinstance(bench["hypernoise_on_front"], bool)
    md = (tmp_path / "bench.md").read_text()
    assert "## Frontier" in md and "| hypernoise-reno | 2 |" in md and "Best method per budget" in md
    assert (tmp_path / "frontier.png").stat().st_size > 10_000
    assert list(bench["methods"]) == ["base", "hypernoise", "reno", "best-of-n", "finetune"]


def test_evaluate_scores_each_budget_with_the_judge(tmp_path):
    out = tmp_path / "eval"
    prompts = tmp_path / "p.txt"
    prompts.write_text("a photo of a red circle\na photo of two squares\n")
    assert main(["evaluate", "--generator", "shapes", "--method", "best-of-n", "--n", "3", "--budgets", "1,2",
                 "--prompts", str(prompts), "--seeds", "0,1", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert [b["budget"] for b in results["budgets"]] == [1, 2]
    for b in results["budgets"]:
        assert set(b["geneval"]) >= {"overall", "counting"} and b["fidelity"] is not None
        assert b["cost"]["generator_forward"] == b["budget"] * 2


@pytest.fixture
def tiny_adapter(tmp_path):
    gen = build_generator("tiny")
    return save_adapter(tmp_path / "adapter", _hypernet(gen, std=0.05), gen)


def test_optimize_with_an_adapter_runs_hypernoise_initialised_reno(tmp_path, tiny_adapter, capsys):
    out = tmp_path / "opt"
    argv = ["optimize", "--generator", "tiny", "--reward", "redness", "--prompt", "a red square", "--iters", "3",
            "--seed", "3", "--no-progress"]
    assert main(argv + ["--adapter", str(tiny_adapter), "--out", str(out)]) == 0
    row = json.loads((out / "results.jsonl").read_text())
    assert row["method"] == "hypernoise-reno" and row["cost"]["hypernet_forward"] == 1
    assert main(argv + ["--out", str(tmp_path / "plain")]) == 0
    plain = json.loads((tmp_path / "plain" / "results.jsonl").read_text())
    assert "method" not in plain and plain["initial_reward"] != row["initial_reward"]
    # the same run again resumes nothing; with another adapter it is refused
    assert main(argv + ["--adapter", str(tiny_adapter), "--out", str(out), "--resume", "latest"]) == 0
    other = shutil.copytree(tiny_adapter, tmp_path / "other")
    assert main(argv + ["--adapter", str(other), "--out", str(out), "--resume", "latest"]) == 2
    assert "--adapter differ" in capsys.readouterr().err


def test_optimize_with_a_bad_adapter_says_so_in_one_line(tmp_path, capsys):
    out = tmp_path / "opt"
    assert main(["optimize", "--generator", "tiny", "--reward", "redness", "--prompt", "a", "--adapter",
                 str(tmp_path / "none"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in err and "does not exist" in lines[0], err
    assert not out.exists()


@pytest.mark.slow
def test_the_world_scale_gpu_script_runs_on_the_cpu_with_a_few_steps(tmp_path):
    """benchmarks/world_scale_gpu.sh end to end on the CPU: calibration, 3 training steps, the
    evaluation on one seed, and world_scale.json (about 1 minute)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "world_scale_gpu.sh"
    env = {**os.environ, "STEPS": "3", "DEVICE": "cpu", "CAL_STEPS": "2", "BUDGET_S": "100000", "EVAL_SEEDS": "1",
           "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(script), str(tmp_path / "ws")], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads((tmp_path / "ws" / "world_scale.json").read_text())
    assert result["steps"] == result["steps_asked"] == 3 and result["rank"] == 32 and result["images"] == 120
    for name in ("base", "hypernoise_1pass", "hypernoise_2passes"):
        assert set(result[name]["geneval"]) >= {"overall", "position"} and result[name]["fidelity"] > 0
    assert 0 < result["reference"]["reno"] <= 1
    settings = json.loads((tmp_path / "ws" / "train" / "adapter" / "hypernoise.json").read_text())
    assert settings["hypernetwork"]["rank"] == 32
