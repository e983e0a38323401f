"""hypernoise: noise hypernetworks for reward alignment of distilled diffusion models.

    x0_hat = x0 + f_phi(x0, c)        image = g(x0_hat, c)

The package mirrors the method: ``generators`` (the frozen g), ``hypernet`` (f_phi),
``objective`` (the noise-space KL objective), ``rewards`` (r), ``training`` (the trainer),
``methods`` (HyperNoise inference and the comparisons) and ``toy2d`` (the analytic 2-D world).

On a diffusers pipeline the user holds: ``hypernoise.attach(pipe, adapter)``, ``hypernoise.detach(pipe)``,
``with hypernoise.attached(pipe, adapter): ...``, ``hypernoise.set_scale(pipe, 0.5)`` and the improved
noise itself, ``hypernoise.modulate_noise(pipe, adapter, latents, prompt)`` (``hypernoise.pipeline``,
imported on first use, so that ``import hypernoise`` stays light).
"""

__version__ = "0.1.0"

from hypernoise.errors import HypernoiseError  # noqa: E402  (cheap, no torch import)
from hypernoise.registry import lazy_exports  # noqa: E402

#: names of ``hypernoise.pipeline``, imported on first use (module ``__getattr__``)
_PIPELINE_NAMES = ("attach", "detach", "attached", "set_scale", "modulate_noise")

__all__ = ["__version__", "HypernoiseError", *_PIPELINE_NAMES]

__getattr__, __dir__ = lazy_exports(globals(), "hypernoise.pipeline", _PIPELINE_NAMES)
