"""docs/agents.md's tool-use loop, in Python, Node and Go, run exactly as written against a live demo
gateway (`llm-gateway serve --demo`, its own process), for a model of each provider."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MODELS
from tests.helpers import start_demo_server

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "agents.md"
ANSWER = "emulator reply: tool get_weather returned"
BASE_ENV = {
    k: v
    for k, v in os.environ.items()
    if not k.endswith("_API_KEY") and not k.startswith(("LLM_", "ALLOWED_"))
}
GO_PACKAGES = "golang-go golang-google-grpc-dev protoc-gen-go protoc-gen-go-grpc protobuf-compiler"


def snippet(language: str) -> str:
    """The first fenced block of `language` in docs/agents.md: the tool-use loop."""
    found = re.search(rf"```{language}\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert found is not None, f"docs/agents.md has no {language} block"
    return found.group(1)


@pytest.fixture(scope="module")
def demo_target() -> Iterator[str]:
    """`llm-gateway serve --demo` in its own process, on a port it picks itself; its address."""
    server = start_demo_server(env=BASE_ENV)
    yield server.address
    server.stop()


def run(command: list[str], target: str, model: str, cwd: Path, **env: str) -> str:
    result = subprocess.run(
        command,
        cwd=cwd,
        env=BASE_ENV | {"LLM_GRPC_TARGET": target, "LLM_MODEL": model} | env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"{command[0]} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.mark.parametrize("provider", MODELS)
def test_the_python_tool_loop_runs_as_written(demo_target: str, provider: str, tmp_path: Path) -> None:
    program = tmp_path / "agent.py"
    program.write_text(snippet("python"))

    output = run([sys.executable, str(program)], demo_target, MODELS[provider], tmp_path)

    assert ANSWER in output
    assert '"city": "text"' in output  # the tool ran with the model's arguments


@pytest.fixture(scope="module")
def node_agent_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An agent's own directory set up as docs/agents.md says: the client installed with
    `npm install /path/to/llm-grpc/clients/node`, after `(cd clients/node && npm ci)` in the project
    (`make test` runs that as `make node-deps`)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("needs node and npm (Node 18+), as README.md's `make test` says")
    if not (ROOT / "clients" / "node" / "node_modules").is_dir():
        pytest.fail(
            "the Node client's packages are missing: run `(cd clients/node && npm ci)` (make node-deps)"
        )
    directory = tmp_path_factory.mktemp("node-agent")
    installed = subprocess.run(  # nosec B603 B607
        ["npm", "install", "--no-audit", "--no-fund", str(ROOT / "clients" / "node")],
        cwd=directory,
        env=BASE_ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    (directory / "agent.js").write_text(snippet("js"))
    return directory


def test_the_node_section_says_how_to_install_the_client() -> None:
    section = DOC.read_text().split("### Node.js", 1)[1].split("```js", 1)[0]

    assert "`(cd clients/node && npm ci)`" in section
    assert "npm install /path/to/llm-grpc/clients/node" in section


@pytest.mark.parametrize("provider", MODELS)
def test_the_node_tool_loop_runs_as_written(demo_target: str, provider: str, node_agent_dir: Path) -> None:
    output = run(["node", "agent.js"], demo_target, MODELS[provider], node_agent_dir)

    assert ANSWER in output


@pytest.fixture(scope="module")
def go_program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Go snippet, built as clients/go/build.sh builds: generated code, GOPATH mode, Debian's grpc-go."""
    if not all(shutil.which(tool) for tool in ("go", "protoc", "protoc-gen-go", "protoc-gen-go-grpc")):
        pytest.skip(f"needs Go and protoc (apt-get install {GO_PACKAGES}; `make go-check` does)")
    work = tmp_path_factory.mktemp("go")
    package = work / "src" / "example.com" / "llm" / "v1"
    agent = work / "src" / "example.com" / "agent"
    package.mkdir(parents=True)
    agent.mkdir(parents=True)
    mapping = "Mllm_grpc/v1/llm.proto=example.com/llm/v1"
    subprocess.run(
        [
            "protoc",
            f"-I{ROOT / 'protos'}",
            f"--go_out={package}",
            f"--go_opt=paths=source_relative,{mapping}",
            f"--go-grpc_out={package}",
            f"--go-grpc_opt=paths=source_relative,{mapping}",
            str(ROOT / "protos" / "llm_grpc" / "v1" / "llm.proto"),
        ],
        check=True,
    )
    for generated in (package / "llm_grpc" / "v1").glob("*.go"):
        generated.rename(package / generated.name)
    (agent / "main.go").write_text(snippet("go"))
    env = BASE_ENV | {
        "GO111MODULE": "off",
        "GOPATH": f"{work}:/usr/share/gocode",
        "GOPROXY": "off",
        "GOCACHE": str(work / "cache"),
    }
    built = subprocess.run(
        ["go", "build", "-o", str(work / "agent"), "."], cwd=agent, env=env, capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr
    return work / "agent"


@pytest.mark.parametrize("provider", MODELS)
def test_the_go_tool_loop_runs_as_written(
    demo_target: str, go_program: Path, provider: str, tmp_path: Path
) -> None:
    output = run([str(go_program)], demo_target, MODELS[provider], tmp_path)

    assert ANSWER in output
