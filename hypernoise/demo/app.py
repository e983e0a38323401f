"""The demo's web page and API (Gradio, imported only when an app is built: ``hypernoise[demo]``).

    build_app(demo) -> gradio.Blocks       the page, and the ``/compare`` API endpoint
    check_port(host, port)                 a port in use is said before any model loads
    serve(app, host, port, share)          until Ctrl-C / SIGTERM; 127.0.0.1 and no share link by default

The page: a prompt with examples, seed, steps, a generate button; base and HyperNoise side by
side, each with its time per image, reward and judge verdict; optional ReNO-K and best-of-N
columns with a budget slider; a plot of reward against seconds per image of what this visitor
generated; the grid as a PNG download. Bad input is a message on the page (``gr.Error``); the
server keeps serving. Generations are queued, one at a time (and ``core.device_lock`` per device).

The API (``/compare``, made by ``_api``): one call with the page's inputs returns the comparison's numbers and
each image as a base64 PNG (docs/demo.md has a ``gradio_client`` and a ``curl`` example).
Gradio's analytics are switched off before Gradio is imported; nothing is fetched from outside.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Optional

from hypernoise.demo.core import SHIPPED_ADAPTER, Comparison, Demo, Request, compare
from hypernoise.errors import ConfigError, HypernoiseError, plain
from hypernoise.images import save_png, to_pil
from hypernoise.training.config import MAX_SEED

#: the page's columns: (method, label while empty, shown before the first request)
COLUMNS = (("base", "base", True), ("hypernoise", "HyperNoise", True), ("reno", "ReNO-K", False),
           ("best-of-n", "best-of-N", False))
#: the method families of the plot, by method
FAMILIES = {"base": "base", "hypernoise": "HyperNoise", "reno": "ReNO", "best-of-n": "best-of-N"}
#: each family's colour in the plot (matplotlib's tab10 colours)
COLOURS = {"base": "#1f77b4", "HyperNoise": "#ff7f0e", "ReNO": "#d62728", "best-of-N": "#2ca02c"}
#: points kept in a visitor's plot
HISTORY = 200
#: grid PNGs kept on disk for download
GRIDS = 32
#: small images (the 32 px world) are shown enlarged pixel for pixel, not blurred
CSS = (".demo-image img { image-rendering: pixelated; width: 100% !important; height: 100% !important; "
       "object-fit: contain; }")
INSTALL = 'pip install "hypernoise[demo]"'


def import_gradio():
    """Gradio, with its analytics off (set before the import: it reads the variable then);
    ``ConfigError`` with the install line where the extra is missing."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import gradio
    except ImportError:
        raise ConfigError(f"the demo needs Gradio, which is not installed: {INSTALL}") from None
    return gradio


# ----------------------------------------------------------------- what the page shows (no Gradio)
def seconds_text(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def judge_text(judged: Optional[dict]) -> str:
    if not judged:
        return ""
    found = ", ".join(judged.get("objects") or []) or "nothing"
    return f"judge: {'correct' if judged.get('correct') else 'wrong'} (sees {found})"


def column_markdown(column, spec: str) -> str:
    """Time per image, reward under ``spec`` and the judge's verdict of one column."""
    lines = [f"**{seconds_text(column.cost.seconds_per_image)}** per image, {column.cost.nfe_per_image:g} NFE",
             f"reward **{column.reward:.4f}** ({spec})"]
    if column.judged:
        lines.append(judge_text(column.judged))
    return "  \n".join(lines)


def status_markdown(result: Comparison) -> str:
    base, hyper = result.column("base"), result.column("hypernoise")
    r = result.request
    return (f"seed {r.seed}, {result.steps} steps: HyperNoise reward {hyper.reward - base.reward:+.4f} over "
            f"base at {hyper.cost.seconds_per_image / max(base.cost.seconds_per_image, 1e-9):.2f}x its time")


def add_history(history: Optional[list], result: Comparison) -> list:
    """The plot's points: one per column generated so far (the last ``HISTORY``)."""
    points = [{"seconds per image": c.cost.seconds_per_image, "reward": c.reward, "method": FAMILIES[c.method],
               "column": c.label, "prompt": result.request.prompt} for c in result.columns]
    return (list(history or []) + points)[-HISTORY:]


def api_payload(result: Comparison) -> dict:
    """``Comparison.to_dict`` with each column's image as a base64 PNG (``png_base64``)."""
    out = result.to_dict()
    for column, row in zip(result.columns, out["columns"]):
        buffer = io.BytesIO()
        to_pil(column.image).save(buffer, format="PNG")
        row["png_base64"] = base64.b64encode(buffer.getvalue()).decode("ascii")
    return out


def run_request(demo: Demo, request: Request, error) -> Comparison:
    """``compare``; a bad request or a failed run raised as ``error`` (``gr.Error``: a message on
    the page, the server serving on)."""
    try:
        return compare(demo, request)
    except HypernoiseError as e:
        raise error(plain(str(e)), print_exception=False) from None
    except (RuntimeError, MemoryError) as e:  # out of memory, a kernel the device lacks: said, not crashed
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise error(f"generation failed: {first}")


def save_grid(result: Comparison, folder: Path, keep: int = GRIDS) -> Path:
    """The grid as a PNG named by what it shows (same request, same file), prompt and seed inside;
    only the ``keep`` newest stay in ``folder`` (Gradio serves its own copy)."""
    r = result.request
    key = hashlib.sha1(repr((r, [c.label for c in result.columns])).encode()).hexdigest()[:12]
    path = save_png(result.grid(), folder / f"hypernoise-demo-seed{r.seed}-{key}.png", r.prompt, r.seed,
                    {"reward": result.reward_spec, "columns": [c.to_dict() for c in result.columns]})
    for old in sorted(folder.glob("hypernoise-demo-*.png"), key=lambda f: f.stat().st_mtime)[:-keep]:
        old.unlink(missing_ok=True)
    return path


# ----------------------------------------------------------------- the page
def build_app(demo: Demo):
    """The Gradio app of ``demo``: the page and the ``/compare`` endpoint, queued one at a time."""
    gr = import_gradio()
    with gr.Blocks(title="hypernoise demo", analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(_header(demo))
        inputs = _inputs(gr, demo)
        button = gr.Button("generate", variant="primary", elem_id="generate")
        gr.Examples([[p] for p in demo.examples], inputs=[inputs[0]], label="examples", cache_examples=False)
        status = gr.Markdown(elem_id="status")
        images, stats, columns = _columns(gr)
        with gr.Row():
            plot = gr.ScatterPlot(x="seconds per image", y="reward", color="method", color_map=COLOURS, tooltip="all",
                                  label="reward against seconds per image (what you generated)", elem_id="plot")
            download = gr.DownloadButton("download the grid (PNG)", interactive=False, elem_id="download")
        history = gr.State([])
        outputs = [*images, *stats, status, plot, download, history]
        for event in (button.click, inputs[0].submit):
            event(_on_generate(demo, gr), [*inputs, history], outputs, concurrency_id="generate",
                  api_visibility="private")
        for box, column in ((inputs[3], columns[2]), (inputs[4], columns[3])):
            box.change(lambda on: gr.Column(visible=on), box, column, queue=False, api_visibility="private")
        gr.api(_api(demo, gr), api_name="compare", concurrency_id="generate")
    app.queue(default_concurrency_limit=1, max_size=64)
    return app


def _on_generate(demo: Demo, gr):
    """The page's handler: (4 images, 4 numbers, status, plot, download, history) for its inputs."""
    grids = Path(tempfile.mkdtemp(prefix="hypernoise-demo-"))

    def on_generate(prompt, seed, steps, reno, best_of_n, budget, points):
        result = run_request(demo, Request(prompt, seed, steps, reno, best_of_n, budget), gr.Error)
        points = add_history(points, result)
        shown = {c.method: c for c in result.columns}
        images = [gr.Image(to_pil(shown[m].image), label=shown[m].label) if m in shown else None for m, _, _ in COLUMNS]
        stats = [column_markdown(shown[m], result.reward_spec) if m in shown else "" for m, _, _ in COLUMNS]
        grid = gr.DownloadButton(value=str(save_grid(result, grids)), interactive=True)
        return (*images, *stats, status_markdown(result), _frame(points), grid, points)

    return on_generate


def _header(demo: Demo) -> str:
    g = demo.generator
    weights = f" (`{g.pretrained}`)" if g.pretrained and not str(g.pretrained).startswith("builtin:") else ""
    adapter = "the HyperNoise adapter that ships for it" if Path(demo.adapter) == SHIPPED_ADAPTER \
        else f"the adapter `{demo.adapter}`"
    judge = " and the world's judge" if demo.judge is not None else ""
    return (f"# HyperNoise: base and HyperNoise from the same noise\n"
            f"Generator `{g.name}`{weights} with {adapter}; images scored with the reward "
            f"`{demo.reward.spec()}`{judge}. Time is per image on `{g.device}`, one request at a time.")


def _inputs(gr, demo: Demo) -> list:
    """[prompt, seed, steps, ReNO on, best-of-N on, budget]."""
    cfg = demo.config
    with gr.Row():
        prompt = gr.Textbox(label="prompt", placeholder=demo.examples[0] if demo.examples else "", max_lines=2,
                            scale=3, elem_id="prompt")
        seed = gr.Number(label=f"seed (0 to {MAX_SEED})", value=0, precision=0, scale=1, elem_id="seed")
        steps = gr.Slider(1, cfg.max_steps, value=demo.generator.default_steps, step=1, label="steps", scale=1,
                          elem_id="steps")
    with gr.Row():
        reno = gr.Checkbox(label="ReNO-K column (optimises the noise against the reward)", elem_id="reno")
        best = gr.Checkbox(label="best-of-N column (N noises, the best by the reward)", elem_id="best-of-n")
        budget = gr.Slider(1, cfg.max_budget, value=min(10, cfg.max_budget), step=1,
                           label="budget: ReNO's iterations K / best-of-N's candidates N", elem_id="budget")
    return [prompt, seed, steps, reno, best, budget]


def _columns(gr) -> tuple[list, list, list]:
    """One column per method (image over its numbers); ReNO and best-of-N hidden until asked."""
    images, stats, columns = [], [], []
    with gr.Row():
        for method, label, visible in COLUMNS:
            with gr.Column(visible=visible, min_width=200) as column:
                images.append(gr.Image(label=label, type="pil", format="png", interactive=False, height=256,
                                       elem_id=f"{method}-image", elem_classes="demo-image", buttons=["download"]))
                stats.append(gr.Markdown(elem_id=f"{method}-stats"))
            columns.append(column)
    return images, stats, columns


def _frame(points: list):
    import pandas as pd  # a dependency of Gradio

    return pd.DataFrame(points, columns=["seconds per image", "reward", "method", "column", "prompt"])


def _api(demo: Demo, gr):
    def compare_api(prompt: str, seed: int = 0, steps: int = 0, reno: bool = False, best_of_n: bool = False,
                    budget: int = 10) -> dict:
        """Base and HyperNoise images from the same noise (and ReNO-K / best-of-N when asked) for one
        prompt and seed: each column's label, seconds and NFE per image, reward, reward terms, judge
        record and PNG (base64). steps 0: the generator's default."""
        return api_payload(run_request(demo, Request(prompt, seed, steps, reno, best_of_n, budget), gr.Error))

    return compare_api


def check_port(host: str, port: int) -> None:
    """``ConfigError`` now, before any model loads, where ``host:port`` cannot be served (in use,
    an address of another machine); the probe binds as the server does (SO_REUSEADDR)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as e:
        raise ConfigError(f"cannot serve on {host}:{port} ({e.strerror or e}); pass another `port` or `host`") from None


def serve(app, host: str = "127.0.0.1", port: int = 7860, share: bool = False) -> None:
    """Serve ``app`` until Ctrl-C or SIGTERM (which the CLI turns into KeyboardInterrupt)."""
    try:
        app.launch(server_name=host, server_port=port, share=share, prevent_thread_lock=True, ssr_mode=False,
                   css=CSS, footer_links=["api", "settings"], show_error=True, quiet=True)
    except OSError as e:
        raise ConfigError(f"cannot serve on {host}:{port} ({str(e).split('. ')[0]}); pass another `port`") from None
    print(f"hypernoise demo: serving on {app.local_url}" + (f" and {app.share_url}" if app.share_url else "")
          + " (Ctrl-C stops)", flush=True)
    try:
        while True:
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("hypernoise demo: stopped", flush=True)
    finally:
        app.close()
