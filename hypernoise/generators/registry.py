"""The generator registry: ``GENERATORS.build(name, pretrained=..., device=..., dtype=...)``."""

from hypernoise.registry import Registry

GENERATORS: Registry = Registry("generator")
