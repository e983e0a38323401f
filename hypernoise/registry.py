"""Name -> factory registries: adding a generator or a reward touches one file.

Plugins. The generic packages (``generators``, ``rewards``) never import a world. A world is a
*plugin*: a module that, when imported, registers its generators and rewards here. The built-in
worlds are listed once, in ``BUILTIN_PLUGINS`` (``hypernoise.world``: the "shapes" world;
``hypernoise.toy2d``: the analytic 2-D world); other packages add theirs with an entry point in
the group ``hypernoise.plugins``, e.g. in their ``pyproject.toml``::

    [project.entry-points."hypernoise.plugins"]
    myworld = "myworld.hypernoise_plugin"

``load_plugins()`` imports all of them, once. Every lookup (``Registry.get``, ``build``, ``help``,
``in`` and iteration) calls it first, so ``build_generator("shapes")`` works without importing the
world; registering does not, so a plugin registering at import time never triggers loading. The
once-flag is set before the first import, so a plugin that looks something up while it is being
imported does not recurse (it sees what is registered so far). A built-in plugin that fails to
import raises (again on the next lookup); a third-party entry point that fails is skipped with a
warning naming it.
"""

from __future__ import annotations

import importlib
import warnings
from importlib.metadata import entry_points
from typing import Callable, Generic, Iterator, TypeVar

from hypernoise.errors import UnknownNameError

T = TypeVar("T")

#: the built-in worlds, imported by ``load_plugins`` (each registers itself on import)
BUILTIN_PLUGINS: tuple[str, ...] = ("hypernoise.world", "hypernoise.toy2d")
#: the entry-point group through which installed packages add plugins
PLUGIN_GROUP = "hypernoise.plugins"

_plugins_loaded = False


def load_plugins() -> None:
    """Import the built-in plugins and the installed ``hypernoise.plugins`` entry points, once."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True  # before importing: a plugin that queries a registry must not recurse
    try:
        for name in BUILTIN_PLUGINS:
            importlib.import_module(name)
    except BaseException:
        _plugins_loaded = False  # the next lookup raises the same error instead of missing a world
        raise
    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken third-party plugin must not break every lookup
            warnings.warn(f"hypernoise plugin {ep.name!r} ({ep.value}) failed to load: {exc!r}", stacklevel=3)


class Registry(Generic[T]):
    """A mapping from names to factories with a one-line help text each.

    >>> GENERATORS = Registry("generator")
    >>> @GENERATORS.register("toy2d", help="analytic 2-D world")
    ... def build_toy2d(**kw): ...
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, help: str = "") -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = factory
            self._help[name] = help or (factory.__doc__ or "").strip().split("\n")[0]
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        load_plugins()
        try:
            return self._factories[name]
        except KeyError:
            known = ", ".join(sorted(self._factories))
            raise UnknownNameError(f"unknown {self.kind} {name!r}; choose one of: {known}") from None

    def build(self, name: str, **kwargs) -> T:
        return self.get(name)(**kwargs)

    def help(self, name: str) -> str:
        load_plugins()
        return self._help[name]

    def __contains__(self, name: str) -> bool:
        load_plugins()
        return name in self._factories

    def __iter__(self) -> Iterator[str]:
        load_plugins()
        return iter(sorted(self._factories))


def lazy_exports(namespace: dict, module: str, names) -> tuple[Callable, Callable]:
    """A package's ``__getattr__`` and ``__dir__`` exporting ``names`` of ``module``, imported on
    first use (PEP 562), so that importing the package stays light:

        __getattr__, __dir__ = lazy_exports(globals(), "hypernoise.pipeline", ("attach", "detach"))
    """
    names = tuple(names)

    def __getattr__(name: str):
        if name in names:
            value = getattr(importlib.import_module(module), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {namespace.get('__name__')!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
