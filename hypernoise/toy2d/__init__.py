"""The analytic 2-D world (a built-in plugin, ``hypernoise.registry.BUILTIN_PLUGINS``).

    generator   the "toy2d" generator g(x) = x + 0.8 sin(1.5 x_swapped) (registered in GENERATORS)
    rewards     the "halfplane", "ring" and "corner" rewards on points y = g(x0) (registered in REWARDS)
    presets     its training preset (registered in presets.PRESETS)
    experiment  train the MLP hypernetwork and check it against the exact tilted distribution:
                ``Toy2DConfig``, ``run_toy2d`` (the ``hypernoise toy2d`` command)

Importing the package registers the generator and the rewards; ``experiment`` (which needs the
trainer) is imported only when one of its names is first used, so loading the plugin stays cheap.
"""

from __future__ import annotations

from hypernoise.registry import lazy_exports
from hypernoise.toy2d import presets  # noqa: F401  (registers the "toy2d" training preset)
from hypernoise.toy2d.generator import Toy2DGenerator, build_toy2d, toy2d_map
from hypernoise.toy2d.rewards import Corner, HalfPlane, Ring

#: names of ``hypernoise.toy2d.experiment``, imported on first use (module ``__getattr__``)
_EXPERIMENT_NAMES = ("OUTPUTS", "TOY_REWARDS", "Toy2DConfig", "evaluate_toy2d", "kl_to_tilted", "run_toy2d",
                     "tilted_statistics")

__all__ = ["Toy2DGenerator", "build_toy2d", "toy2d_map", "HalfPlane", "Ring", "Corner", *_EXPERIMENT_NAMES]

__getattr__, __dir__ = lazy_exports(globals(), "hypernoise.toy2d.experiment", _EXPERIMENT_NAMES)
