"""What a newcomer does in the first hour, from a fresh clone: `make run`, every runnable README block in
a clean shell, the README's production start and its first call with a token, then Ctrl-C.

Choices that keep it cheap enough for every `make test` (it takes seconds, not the minutes of an install):
- the clone is `git clone` of this repository (its committed HEAD, as a newcomer gets it);
- its `.venv` is a link to the environment running the tests instead of a second `make install`, and
  `make` is told not to remake the install stamp (`make -o .venv/.installed run`): the commands the
  README names (`.venv/bin/...`) are the ones `make install` made (the editable install behind them
  points at the checkout the tests run from, so a change not yet committed is seen there; the README
  and the Makefile are the clone's own);
- `make run` gets `RUN_ARGS="--port 0 --metrics-port 0"` (the Makefile's own knob), and the production
  start's `--port 50051` becomes `--port 0`: tests never take fixed ports. That is the only change made to
  what the README says;
- the provider emulators stand in for the real providers in the production start: they accept the key
  the README exports (`...`) and the gateway is pointed at them with the `*_BASE_URL` settings, which
  the README block does not set.
"""

from __future__ import annotations

import os
import re
import signal

# git, make, bash and the project's commands, with argv built here.
import subprocess  # nosec B404
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_docs import ROOT, _command, clean_shell, code_blocks
from tests.processes import START_TIMEOUT, LogWatcher, event, start_emulators, stop

README = ROOT / "README.md"


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("first-hour") / "llm-grpc"
    subprocess.run(  # nosec B603 B607
        ["git", "clone", "--quiet", str(ROOT), str(directory)], check=True, capture_output=True
    )
    (directory / ".venv").symlink_to(ROOT / ".venv")
    return directory


def _start(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], LogWatcher, str]:
    """A command that ends in `llm-gateway serve`, in its own process group (as a terminal runs it, so
    Ctrl-C reaches every process of it); its log and the address of its `serving` line."""
    process = subprocess.Popen(  # nosec B603
        argv,
        cwd=cwd,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    assert process.stderr is not None
    log = LogWatcher(process.stderr)
    serving = log.wait_for(event("serving"))[0]
    return process, log, str(serving["address"])


def _interrupt(process: subprocess.Popen[str], log: LogWatcher) -> None:
    """Ctrl-C, as the banner says; the gateway drains and says `stopped`."""
    os.killpg(process.pid, signal.SIGINT)
    log.wait_for(event("stopped"))
    process.wait(timeout=START_TIMEOUT)


@pytest.fixture(scope="module")
def make_run(clone: Path) -> Iterator[tuple[str, LogWatcher]]:
    process, log, address = _start(
        ["make", "-o", ".venv/.installed", "run", "RUN_ARGS=--port 0 --metrics-port 0"], clone, clean_shell()
    )
    yield address, log
    _interrupt(process, log)


BLOCKS = list(code_blocks(README))


@pytest.mark.parametrize("block", BLOCKS, ids=lambda block: block.name)
def test_every_runnable_readme_block_works_in_a_fresh_clone(
    block: object, clone: Path, make_run: tuple[str, LogWatcher]
) -> None:
    address, _ = make_run
    result = subprocess.run(  # nosec B603
        _command(block),  # type: ignore[arg-type]
        cwd=clone,
        env=clean_shell(LLM_GRPC_TARGET=address),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, f"--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"


def production_blocks() -> tuple[str, str]:
    """The README's two blocks under "Running against the real providers": the start, the first call."""
    text = README.read_text()
    section = text[text.index("## Running against the real providers") :]
    section = section[: section.index("\n## ", 3)]
    start, call = re.findall(r"```bash\n(.*?)```", section, re.DOTALL)[:2]
    return start, call


def test_the_production_start_and_a_first_call_with_a_token_work_as_written(clone: Path) -> None:
    start, call = production_blocks()
    assert "--port 50051" in start
    emulators, urls = start_emulators("...")  # the key the README's block exports
    gateway = None
    try:
        gateway, log, address = _start(
            ["bash", "-euo", "pipefail", "-c", start.replace("--port 50051", "--port 0")],
            clone,
            clean_shell(**urls),
        )
        pid = log.events("serving")[0]["pid"]
        # "A second shell with the same LLM_JWT_HS256_SECRET": the one the first block generated.
        secret = _environment_of(pid)["LLM_JWT_HS256_SECRET"]
        port = address.rsplit(":", 1)[1]
        first_call = subprocess.run(  # nosec B603 B607
            ["bash", "-euo", "pipefail", "-c", call],
            cwd=clone,
            env=clean_shell(LLM_JWT_HS256_SECRET=secret, LLM_GRPC_TARGET=f"localhost:{port}"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        unauthenticated = subprocess.run(  # nosec B603 B607
            [".venv/bin/llm-grpc", "--ca", "server.pem", "complete", "Hello"],
            cwd=clone,
            env=clean_shell(LLM_GRPC_TARGET=f"localhost:{port}"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        _interrupt(gateway, log)
    finally:
        for process in (gateway, emulators):
            if process is not None:
                stop(process)

    assert first_call.returncode == 0, first_call.stderr
    assert first_call.stdout.strip() == "emulator reply: Hello"
    assert "[openai/gpt-5.4-mini]" in first_call.stderr
    assert unauthenticated.returncode == 10 + 16  # UNAUTHENTICATED: the token is what let the call in


def _environment_of(pid: int) -> dict[str, str]:
    """A running process's environment (Linux: /proc/PID/environ)."""
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(entry.decode().split("=", 1) for entry in raw.split(b"\0") if b"=" in entry)
