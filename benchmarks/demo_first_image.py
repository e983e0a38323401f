"""Time to first image of ``hypernoise demo`` on the built-in world, from the command's start.

    python benchmarks/demo_first_image.py          # 3 runs; a table + benchmarks/results/demo_first_image.json
    python benchmarks/demo_first_image.py --runs 1 --out /tmp/first.json

Each run starts ``hypernoise demo`` as a user types it (no arguments but a free local port: the
built-in shapes world, the shipped adapter, the threads the command picks) in a fresh process, and
measures from the moment the process is started:

- ``serving_s``: until the command prints that it serves (Python, torch and Gradio imported, the
  world and the adapter loaded, the server up);
- ``page_s``: until the page answers HTTP 200;
- ``first_image_s``: until one API call (``/compare``, the page's own request: base and HyperNoise
  for an example prompt, scored and judged) has answered; the client library is imported before
  the clock starts, and the call is made as soon as the page answers.

Besides each run: the generation's own seconds per image (base, HyperNoise), the machine's cores
and its load when the run started (the goal is under 10 s on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "demo_first_image.json"
PROMPT, SEED = "a photo of a red circle", 0
LOCAL = urllib.request.build_opener(urllib.request.ProxyHandler({}))
GOAL_S = 10.0


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (the tests use it too)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(port: int) -> list:
    script = Path(sys.executable).with_name("hypernoise")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "hypernoise.cli.main"]
    return [*base, "demo", "--port", str(port)]


def _watch(proc: subprocess.Popen, start: float, marks: dict, lines: list) -> None:
    """Record when the command says it serves; keep its output."""
    for line in proc.stdout:
        lines.append(line)
        if "serving on" in line and "serving_s" not in marks:
            marks["serving_s"] = time.perf_counter() - start


def wait_page(url: str, proc: subprocess.Popen, timeout: float) -> None:
    """Poll ``url`` until it answers 200; RuntimeError when ``proc`` exits or ``timeout`` passes."""
    end = time.perf_counter() + timeout
    while time.perf_counter() < end and proc.poll() is None:
        try:
            with LOCAL.open(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"hypernoise demo did not serve {url} within {timeout:.0f} s (exit status {proc.poll()})")


def one_run(timeout: float = 120.0) -> dict:
    """Start the demo, time the phases, stop it; returns the run's row."""
    from gradio_client import Client  # imported before the clock starts

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    load = os.getloadavg()[0]
    marks, lines = {}, []
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    start = time.perf_counter()
    proc = subprocess.Popen(_command(port), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    watcher = threading.Thread(target=_watch, args=(proc, start, marks, lines), daemon=True)
    watcher.start()
    try:
        wait_page(url, proc, timeout)
        marks["page_s"] = time.perf_counter() - start
        result = Client(url, verbose=False).predict(PROMPT, SEED, api_name="/compare")
        marks["first_image_s"] = time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(30)
        watcher.join(5)
    seconds = {c["method"]: c["seconds_per_image"] for c in result["columns"]}
    return {**marks, "generation_s_per_image": seconds, "load_1min_at_start": load}


def machine() -> dict:
    import gradio
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cores": cores, "cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
            "torch": torch.__version__, "gradio": gradio.__version__}


def table(rows: list) -> str:
    out = ["| run | serving (s) | page (s) | first image (s) | base s/image | HyperNoise s/image | load at start |",
           "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rows, 1):
        g = r["generation_s_per_image"]
        out.append(f"| {i} | {r.get('serving_s', float('nan')):.2f} | {r['page_s']:.2f} | {r['first_image_s']:.2f} | "
                   f"{g['base']:.3f} | {g['hypernoise']:.3f} | {r['load_1min_at_start']:.2f} |")
    med = statistics.median(r["first_image_s"] for r in rows)
    out.append(f"\nmedian time to first image: {med:.2f} s (goal: under {GOAL_S:g} s on 2 CPU cores)")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3, help="fresh starts of the demo (default 3)")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"JSON file to write (default {RESULTS})")
    args = p.parse_args(argv)
    if shutil.which("hypernoise") is None and not Path(sys.executable).with_name("hypernoise").exists():
        print("note: no hypernoise script on PATH; running python -m hypernoise.cli.main", file=sys.stderr)
    rows = [one_run() for _ in range(args.runs)]
    report = {"command": "hypernoise demo", "prompt": PROMPT, "seed": SEED, "machine": machine(), "runs": rows,
              "median_first_image_s": statistics.median(r["first_image_s"] for r in rows), "goal_s": GOAL_S,
              "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(table(rows))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
