"""Docs that run: every code block marked `runnable` in README.md, clients/README.md and docs/ runs
against a live demo gateway (README.md, "Contributing: docs that run", says how to mark one).

Each block runs as a reader pastes it: from the repository root (the project directory a reader has after
`make install`: .venv, and clients/node/node_modules once `(cd clients/node && npm ci)` has run, as the
Node section says), in a clean shell — the environment without .venv/bin on PATH, without VIRTUAL_ENV,
without any LLM_* setting or provider key — with only the gateway's address in LLM_GRPC_TARGET. Python
with .venv/bin/python (what the docs say to run it with), bash with `bash -euo pipefail`, JavaScript
with node. Nothing is linked or installed behind the scenes.
"""

from __future__ import annotations

import os
import re

# Runs the documentation's own snippets with this Python, bash and node, with fixed argv.
import subprocess  # nosec B404
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import DemoServer, start_demo_server

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = sorted([ROOT / "README.md", ROOT / "clients" / "README.md", *(ROOT / "docs").rglob("*.md")])
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^`\n]*)$")
BIN = Path(sys.executable).parent
NODE_MODULES = ROOT / "clients" / "node" / "node_modules"


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    language: str
    code: str

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def code_blocks(path: Path, text: str | None = None) -> Iterator[Block]:
    """The fenced code blocks of `path` (or of `text`, as if it were that file) whose info string says
    `runnable` (the language first, as GitHub reads it)."""
    lines = (path.read_text() if text is None else text).splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence, indent, words = opening["fence"], len(opening["indent"]), opening["info"].split()
        start = index + 1  # the opening fence's line, counted from 1
        body, index = [], index + 1
        while index < len(lines) and not lines[index].strip().startswith(fence):
            body.append(lines[index][indent:])
            index += 1
        index += 1
        if "runnable" in words[1:]:
            yield Block(path, start, words[0], "\n".join(body) + "\n")


RUNNABLE = [block for path in DOCUMENTS for block in code_blocks(path)]


def test_code_blocks_are_found_with_their_language() -> None:
    text = "intro\n```python runnable\nprint(1)\n```\n```sh\nls\n```\n  ```bash runnable\n  echo hi\n  ```\n"
    path = ROOT / "docs" / "_example.md"

    blocks = list(code_blocks(path, text))

    assert [(b.language, b.code, b.line) for b in blocks] == [
        ("python", "print(1)\n", 2),
        ("bash", "echo hi\n", 8),
    ]


def test_the_readmes_python_node_cli_and_grpcurl_examples_are_runnable() -> None:
    languages = {(b.path.relative_to(ROOT).as_posix(), b.language) for b in RUNNABLE}

    assert {("README.md", "python"), ("README.md", "bash")} <= languages
    assert {
        ("clients/README.md", "python"),
        ("clients/README.md", "js"),
        ("clients/README.md", "bash"),
    } <= languages


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoServer]:
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY") and not k.startswith(("LLM_", "ALLOWED_"))
    }
    server = start_demo_server(env=environment)
    yield server
    server.stop()


def _command(block: Block) -> list[str]:
    if block.language == "python":
        return [str(BIN / "python"), "-c", block.code]
    if block.language in ("bash", "sh", "shell"):
        return ["bash", "-euo", "pipefail", "-c", block.code]
    if block.language in ("js", "javascript", "node"):
        if not NODE_MODULES.is_dir():
            pytest.fail(
                "the Node client's packages are missing: run `make node-deps` (npm ci in clients/node)"
            )
        return ["node", "-e", block.code]
    pytest.fail(f"{block.name}: no runner for a `{block.language}` block marked runnable")


def clean_shell(**env: str) -> dict[str, str]:
    """A reader's shell: this environment without the virtual environment on PATH (nor VIRTUAL_ENV),
    without LLM_* settings, allowlists or provider keys; plus `env`."""
    path = os.pathsep.join(
        entry
        for entry in os.environ.get("PATH", os.defpath).split(os.pathsep)
        if entry and Path(entry).resolve() != BIN.resolve()
    )
    kept = {
        k: v
        for k, v in os.environ.items()
        if not k.endswith("_API_KEY") and not k.startswith(("LLM_", "ALLOWED_")) and k != "VIRTUAL_ENV"
    }
    return kept | {"PATH": path} | env


def test_the_clean_shell_has_no_virtual_environment_on_its_path() -> None:
    env = clean_shell()
    found = subprocess.run(  # nosec B603 B607
        ["bash", "-c", "command -v llm-grpc llm-gateway || true"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )

    assert str(BIN) not in env["PATH"].split(os.pathsep)
    assert found.stdout.strip() == ""


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda block: block.name)
def test_runnable_block_runs_against_a_live_gateway(block: Block, demo: DemoServer) -> None:
    env = clean_shell(LLM_GRPC_TARGET=demo.address)

    result = subprocess.run(  # nosec B603
        _command(block), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, (
        f"{block.name} failed:\n{block.code}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
