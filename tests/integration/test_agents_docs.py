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


@pytest.mark.parametrize("provider", MODELS)
def test_the_node_tool_loop_runs_as_written(demo_target: str, provider: str, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None or not (ROOT / "clients" / "node" / "node_modules").is_dir():
        pytest.skip("needs node and clients/node/node_modules (`make node-test` installs them)")
    modules = tmp_path / "node_modules"
    modules.mkdir()
    (modules / "llm-grpc-client").symlink_to(ROOT / "clients" / "node")
    program = tmp_path / "agent.js"
    program.write_text(snippet("js"))

    output = run([node, str(program)], demo_target, MODELS[provider], tmp_path)

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
