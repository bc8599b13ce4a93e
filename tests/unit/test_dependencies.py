"""Every third-party module the gateway and the Python client import is a declared dependency of its
own distribution (not one that merely arrives with another package), and no code imports an SDK's
private modules."""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECTS = {
    # source folders → the pyproject that must declare what they import
    ("server",): ROOT / "pyproject.toml",
    ("clients/python/llm_grpc_client",): ROOT / "clients/python/pyproject.toml",
}
OURS = {"server", "llm_grpc", "llm_grpc_client", "tests"}
"""Our own packages. The client imports `llm_grpc` (the generated stubs) from the root distribution,
installed next to it (see clients/python/pyproject.toml)."""
PRIVATE_SDK_MODULE = re.compile(r"^(openai|anthropic|google\.genai)\._")


def _imports(folders: tuple[str, ...]) -> dict[str, set[str]]:
    """Every module imported (top level or inside a function) → the files importing it."""
    found: dict[str, set[str]] = {}
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    found.setdefault(name, set()).add(str(path.relative_to(ROOT)))
    return found


def _declared(pyproject: Path) -> set[str]:
    """Normalised names of the distributions `pyproject` requires at run time."""
    requirements = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return {_normalise(re.split(r"[\s\[<>=!~;]", r, maxsplit=1)[0]) for r in requirements}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def _packages_distributions() -> dict[str, list[str]]:
    """Top-level module → distributions (slow: it reads every installed distribution's file list)."""
    return dict(importlib.metadata.packages_distributions())


@functools.cache
def _files(distribution: str) -> tuple[str, ...]:
    return tuple(str(f) for f in importlib.metadata.files(distribution) or ())


def _distributions(module: str) -> set[str]:
    """The installed distributions that provide `module` (a namespace package such as `google` has
    several: the most specific submodule decides)."""
    providers = _packages_distributions()
    parts = module.split(".")
    top = parts[0]
    candidates = {_normalise(d) for d in providers.get(top, [])}
    if len(candidates) <= 1:
        return candidates
    # google.*: find which distribution ships the submodule's files
    prefix = "/".join(parts[:2])
    return {_normalise(dist) for dist in providers[top] if any(f.startswith(prefix) for f in _files(dist))}


@pytest.mark.parametrize(("folders", "pyproject"), PROJECTS.items(), ids=["server", "client"])
def test_every_third_party_import_is_a_declared_dependency(folders: tuple[str, ...], pyproject: Path) -> None:
    declared = _declared(pyproject)
    missing = {}
    for module, files in _imports(folders).items():
        top = module.split(".")[0]
        if top in sys.stdlib_module_names or top in OURS or top == "__future__":
            continue
        distributions = _distributions(module)
        if not distributions & declared:
            missing[module] = (sorted(distributions), sorted(files)[:3])

    assert not missing, f"imported but not declared in {pyproject.relative_to(ROOT)}: {missing}"


@pytest.mark.parametrize("sdk", ["openai", "anthropic", "google-genai"])
def test_the_sdks_are_declared_with_their_aiohttp_extra(sdk: str) -> None:
    requirements = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]

    assert any(r.startswith(f"{sdk}[aiohttp]") for r in requirements)


def test_no_code_imports_an_sdks_private_modules() -> None:
    private = {
        module: sorted(files)
        for folders in PROJECTS
        for module, files in _imports(folders).items()
        if PRIVATE_SDK_MODULE.match(module)
    }

    assert not private
