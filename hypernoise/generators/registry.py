"""The generator registries.

``GENERATORS.build(name, pretrained=..., device=..., dtype=...)``: a generator loaded by name.
``PIPELINES.build(class_name, pipe=..., height=..., width=...)``: the generator of a diffusers
pipeline object the user already holds, wrapped around its own modules (``hypernoise.attach``);
keyed by the pipeline's class name (``"SanaSprintPipeline"``).
"""

from hypernoise.registry import Registry

GENERATORS: Registry = Registry("generator")
#: diffusers pipeline class name -> ``from_pipeline(pipe, height, width)`` of the family that wraps it
PIPELINES: Registry = Registry("diffusers pipeline")
