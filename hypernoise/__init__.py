"""hypernoise: noise hypernetworks for reward alignment of distilled diffusion models.

    x0_hat = x0 + f_phi(x0, c)        image = g(x0_hat, c)

The package mirrors the method: ``generators`` (the frozen g), ``hypernet`` (f_phi),
``objective`` (the noise-space KL objective), ``rewards`` (r), ``training`` (the trainer),
``methods`` (HyperNoise inference and the comparisons) and ``toy2d`` (the analytic 2-D world).
"""

__version__ = "0.1.0"

from hypernoise.errors import HypernoiseError  # noqa: E402  (cheap, no torch import)

__all__ = ["__version__", "HypernoiseError"]
