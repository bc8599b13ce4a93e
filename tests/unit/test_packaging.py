"""The built wheel carries what an installed gateway needs: generated stubs with their type stubs, and
the model catalogue; and its generated imports work from the installed location."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_carries_the_stubs_and_the_catalogue_and_imports_from_its_own_files(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("llm_grpc-*.whl"))
    installed = tmp_path / "installed"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(installed)
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from llm_grpc.v1 import llm_pb2_grpc; import server.config as c, llm_grpc;"
        "assert llm_grpc.__file__.startswith(sys.argv[1]), llm_grpc.__file__;"
        "assert c.load_catalogue(c.DEFAULT_CATALOGUE).models()"
    )

    result = subprocess.run(
        [sys.executable, "-c", probe, str(installed)], cwd=tmp_path, capture_output=True, text=True
    )

    assert {"llm_grpc/v1/llm_pb2.py", "llm_grpc/v1/llm_pb2.pyi", "llm_grpc/v1/llm_pb2_grpc.pyi"} <= names
    assert {"server/catalogue.toml", "server/py.typed"} <= names
    assert not any(name.startswith("tests/") for name in names)
    assert result.returncode == 0, result.stderr


def test_the_python_clients_finish_reasons_are_the_protos() -> None:
    from llm_grpc_client import FinishReason

    from llm_grpc.v1 import llm_pb2

    proto = {v.name.removeprefix("FINISH_REASON_"): v.number for v in llm_pb2.FinishReason.DESCRIPTOR.values}

    assert {member.name: member.value for member in FinishReason} == proto


def test_the_emulators_print_the_gateways_own_setting_names() -> None:
    from server.emulators.__main__ import ENV_NAMES, KEY_NAMES
    from server.providers.registry import SPECS

    specs = [SPECS["openai"], SPECS["anthropic"], SPECS["gemini"]]

    assert list(ENV_NAMES) == [spec.base_url_setting for spec in specs]
    assert list(KEY_NAMES) == [spec.key_settings[0] for spec in specs]
