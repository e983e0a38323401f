"""benchmarks/realsize.py and benchmarks/gpu_check.sh on their CPU path with tiny configs: the jobs
run in their own processes, every phase writes the fields the tables and docs read, and the
1024-px memory is fitted the way docs/performance.md states."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "realsize.py"


def _module():
    spec = importlib.util.spec_from_file_location("realsize", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args, env=None, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


def test_built_modules_have_real_weights_and_no_meta_tensors():
    realsize = _module()
    gen = realsize.build_generator("sana-sprint", 64, torch.float32, "cpu", quick=True)
    tensors = list(gen.parameters()) + list(gen.buffers())
    assert not any(t.is_meta for t in tensors)
    assert all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())
    assert gen.latent_shape == (4, 32, 32) and not any(p.requires_grad for p in gen.parameters())
    cond = gen.encode(["a", "b"])  # the stand-in for the text encoder: the shapes the backbone takes
    assert cond["prompt_embeds"].shape == (2, 16, 8) and cond["prompt_attention_mask"].dtype == torch.long
    images = gen.generate(gen.sample_noise(2, seed=0), cond)
    assert images.shape == (2, 3, 64, 64) and torch.isfinite(images).all()


def test_reno_ensemble_scores_and_differentiates():
    realsize = _module()
    reward = realsize.build_reno(torch.float32, "cpu", quick=True, checkpointing=True)
    assert reward.spec() == "hps:5,imagereward:1,clip:0.01,pickscore:0.05"
    images = torch.rand(2, 3, 64, 64, requires_grad=True)
    reward(images, ["a", "b"]).sum().backward()
    assert images.grad.abs().sum() > 0


def test_the_1024_fit_is_linear_in_pixels():
    realsize = _module()
    a, b = 3.0, 5.0 / 2**20  # GiB, GiB per pixel

    def train(px, ckpt):
        return {"phase": "train", "model": "sana-sprint", "px": px, "dtype": "bf16", "reward": "redness",
                "checkpointing": ckpt, "peak_gib": a + b * px * px}

    reward = {"phase": "reward", "reward": "reno", "dtype": "bf16", "checkpointing": True, "batch": 1,
              "weights_gib": {"reward": 6.3}, "above_start_gib": 0.2}
    derived = realsize.memory_at_1024([train(256, True), train(512, True), reward])
    (row,) = derived["rows"]
    assert row["generator_1024_gib"] == pytest.approx(a + b * 1024**2)
    assert row["total_1024_gib"] == pytest.approx(a + b * 1024**2 + 6.5)
    assert "a + b x pixels" in derived["method"]


def test_quick_inference_job_writes_every_field(tmp_path):
    out = tmp_path / "r.json"
    done = _run("--quick", "--only", "inference sana-sprint", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["meta"]["quick"] and data["meta"]["weights"].startswith("random")
    (rec,) = data["results"]
    assert "error" not in rec, rec
    assert set(rec["forward"]) == {"off", "on", "merged", "peft"} and set(rec["forward_r8"]) == {"off", "on", "peft"}
    assert set(rec["generation"]) == {"base", "hypernoise_r128", "merged", "hypernoise_r8"}
    assert rec["lora_flops"]["8"] == pytest.approx(rec["lora_flops"]["128"] / 16) and rec["flops_plain"] > 0
    assert rec["merged_gib"] > 0 and rec["floor"] == 2.0 and rec["decode"]["decode"]["median_s"] > 0
    assert "### Generation" in done.stdout and "### Backbone forward" in done.stdout


def test_peft_forward_variant_runs_peft_and_restores_the_library_forward():
    """The ``peft`` rows time peft's own LoRA forward; after them the library's is back."""
    from peft.tuners.lora import layer as peft_layer

    from hypernoise.lora import _fused_classes

    cls = _fused_classes()["FusedLoraLinear"]
    own = cls.forward
    with _module()._peft_forward():
        assert cls.forward is peft_layer.Linear.forward
    assert cls.forward is own and own is not peft_layer.Linear.forward


@pytest.mark.slow  # every adapted layer shape timed at two ranks, ~35 s
def test_layers_phase_times_every_adapted_layer_once_per_use():
    """The ``layers`` phase covers each adapted layer of a pass (all but the delta-only final
    projection), and its FLOP share of a Linear is the LoRA's r (in + out) / (in x out)."""
    import contextlib

    realsize = _module()
    torch.manual_seed(0)
    gen = realsize.build_generator("sana-sprint", 64, torch.float32, "cpu", quick=True)
    bar = lambda **kw: contextlib.nullcontext(type("Bar", (), {"update": lambda self, n: None})())  # noqa: E731
    ctx = {"gen": gen, "device": torch.device("cpu"), "noise": gen.sample_noise(1, seed=0),
           "cond": gen.encode(["a red cube"]), "bar": bar}
    out = realsize.phase_layers(ctx, rounds=1)
    hyper = realsize._hypernetwork(gen, 8)
    sites = len(hyper.lora.sites)
    hyper.remove()
    for rank in realsize.RANKS:
        rec = out[str(rank)]
        assert rec["layers"] == sites - 1 and rec["base_s"] > 0 and out["plain_forward_s"] > 0
        for shape in rec["shapes"]:
            assert shape["library_s"] > 0 and shape["peft_s"] > 0
            if len(shape["weight"]) == 2:
                o, i = shape["weight"]
                assert shape["lora_flop_share"] == pytest.approx(rank * (i + o) / (i * o), rel=1e-6)


@pytest.mark.slow
def test_quick_cpu_plan_end_to_end(tmp_path):
    out = tmp_path / "r.json"
    done = _run("--quick", "--out", str(out), "--table", str(tmp_path / "r.md"))
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(out.read_text())
    errors = [r for r in data["results"] if "error" in r]
    assert not errors, errors
    phases = {r["phase"] for r in data["results"]}
    assert phases == {"overhead", "inference", "forward", "layers", "train", "reward"}
    for rec in data["results"]:
        if rec["phase"] in ("train", "reward"):
            assert rec["step_s"] > 0 and rec["peak_gib"] > 0 and rec["memory"]
    assert {(r["dtype"], r["checkpointing"]) for r in data["memory_at_1024"]["rows"]} == {
        (d, c) for d in ("fp32", "bf16") for c in (False, True)}
    assert "check" in data["memory_at_1024"]
    assert "1024 px with the ReNO ensemble" in (tmp_path / "r.md").read_text()


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_on_the_cpu_path(tmp_path):
    env = {**os.environ, "HYPERNOISE_GPU_CHECK_CPU": "1", "OUT": str(tmp_path), "PYTHON": sys.executable,
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          env=env, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads((tmp_path / "realsize_gpu.json").read_text())
    assert data["meta"]["plan"] == "gpu"
    errors = [r for r in data["results"] if "error" in r]
    assert not errors, errors
    batches = [r for r in data["results"] if r["phase"] == "max-batch"]
    assert {r["model"] for r in batches} == {"sana-sprint", "sd-turbo", "flux-schnell"}
    assert all(r["largest_batch"] == 4 and r["stopped_by"] == "limit" for r in batches)
    assert (tmp_path / "realsize_gpu.md").read_text().startswith("python benchmarks/realsize.py")
    geneval = json.loads((tmp_path / "geneval_gpu.json").read_text())
    assert {r["part"] for r in geneval["rows"]} == {"detector", "colour"} and geneval["geneval_images_per_s"] > 0
    assert "GenEval images per second" in (tmp_path / "geneval_gpu.md").read_text()
    attach = json.loads((tmp_path / "attach_device.json").read_text())
    assert [r["family"] for r in attach] == ["sd-turbo", "sana-sprint", "flux-schnell"] and all(r["ok"] for r in attach)


def _wheel(folder: Path, name: str) -> Path:
    """A minimal pure-Python wheel of a one-line module ``name``."""
    import zipfile

    path = folder / f"{name}-1.0-py3-none-any.whl"
    info = f"{name}-1.0.dist-info"
    files = {f"{name}.py": "VALUE = 7\n", f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(path, "w") as z:
        for f, text in files.items():
            z.writestr(f, text)
    return path


def _gpu_check(tmp_path, wheels: Path):
    env = {**os.environ, "HYPERNOISE_GPU_CHECK_CPU": "1", "OUT": str(tmp_path / "out"), "PYTHON": sys.executable,
           "GPU_CHECK_WHEELS": str(wheels), "GPU_CHECK_SITE": str(tmp_path / "site"), "GPU_CHECK_BUDGET_S": "0"}
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                          env=env, timeout=300, cwd=ROOT)


def test_gpu_check_installs_carried_wheels_before_anything_else(tmp_path):
    """The lent GPU machine cannot reach the package index: the wheels that gpu_wheels.sh fetched
    are installed, without the index, into a folder of their own that comes first on the path."""
    wheels = tmp_path / "whl"
    wheels.mkdir()
    _wheel(wheels, "hn_probe")
    done = _gpu_check(tmp_path, wheels)  # budget 0: the install, then every job skipped
    assert done.returncode == 0, done.stderr[-2000:]
    assert "installed the carried wheels" in done.stdout and "hn_probe" in done.stdout
    assert (tmp_path / "site" / "hn_probe.py").read_text() == "VALUE = 7\n"


def test_gpu_check_refuses_a_carried_torch_wheel(tmp_path):
    wheels = tmp_path / "whl"
    wheels.mkdir()
    _wheel(wheels, "torch")
    done = _gpu_check(tmp_path, wheels)
    assert done.returncode == 2 and "holds a torch wheel" in done.stderr
    assert not (tmp_path / "site").exists()  # nothing installed over the machine's torch


def test_gpu_wheels_never_fetches_torch(tmp_path):
    env = {**os.environ, "GPU_WHEELS": "torch", "PYTHON": sys.executable, "PIP_NO_INDEX": "1"}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_wheels.sh"), str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=120, cwd=ROOT)
    assert done.returncode == 2 and "never torch" in done.stderr
    assert not list(tmp_path.iterdir())
