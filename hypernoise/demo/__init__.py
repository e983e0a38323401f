"""``hypernoise demo``: base and HyperNoise side by side in a web page, and the same as an API.

    core    load_demo(DemoConfig) -> Demo; compare(demo, Request) -> Comparison (no web framework)
    app     build_app(demo) -> a Gradio app; check_port; serve(app, host, port, share) (Gradio imported there)

Importing this package does not import Gradio (``hypernoise[demo]``); building an app does.
"""

from hypernoise.demo.app import build_app, check_port, import_gradio, serve
from hypernoise.demo.core import (SHIPPED_ADAPTER, Column, Comparison, Demo, DemoConfig, Request, check_request,
                                  compare, load_demo)

__all__ = ["SHIPPED_ADAPTER", "Column", "Comparison", "Demo", "DemoConfig", "Request", "build_app", "check_port",
           "check_request", "compare", "import_gradio", "load_demo", "serve"]
