"""Packaging a user can trust (issue 31, item 9): a licence file named by an SPDX expression, a
typed package, every package the library imports at module level declared, huggingface_hub
declared, and ``all`` holding every integration extra (tracking included)."""

import ast
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _top_level_imports() -> set:
    """Third-party top-level packages imported by module-level statements of hypernoise/."""
    found = set()
    for path in (ROOT / "hypernoise").rglob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m != "hypernoise"}


def test_the_licence_is_a_file_and_an_spdx_expression():
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert not any(c.startswith("License ::") for c in PROJECT["classifiers"])  # PEP 639: the expression alone


def test_the_package_is_typed_and_says_where_it_comes_from():
    assert (ROOT / "hypernoise" / "py.typed").is_file()
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["hypernoise"]
    assert "py.typed" in data and "Typing :: Typed" in PROJECT["classifiers"]
    assert PROJECT["urls"] and all(url.startswith("https://") for url in PROJECT["urls"].values())


def test_every_module_level_import_and_huggingface_hub_are_core_dependencies():
    from importlib.metadata import packages_distributions

    core = {_name(r) for r in PROJECT["dependencies"]}
    distributions = packages_distributions()
    for module in _top_level_imports():
        names = {_name(d) for d in distributions.get(module, [module])}
        assert names & core, f"{module} is imported at module level but not a dependency"
    assert "huggingface-hub" in core  # hub ids, model cards, pushes: imported on every Hub path


def test_all_holds_every_integration_extra():
    extras = {k: {_name(r) for r in v} for k, v in PROJECT["optional-dependencies"].items()}
    assert extras["diffusers"] | extras["tracking"] <= extras["all"]
