"""TLS and mTLS on the gRPC port, with certificates made at test time (trustme)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import trustme

from llm_grpc.v1 import llm_pb2, llm_pb2_grpc
from server.app import App, ConfigError, build_app
from tests.conftest import Emulators, make_settings
from tests.helpers import user


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


def _server_files(ca: trustme.CA, folder: Path) -> dict[str, Path]:
    cert = ca.issue_cert("127.0.0.1", "localhost")
    paths = {"llm_tls_cert_file": folder / "server.pem", "llm_tls_key_file": folder / "server.key"}
    cert.cert_chain_pems[0].write_to_path(str(paths["llm_tls_cert_file"]))
    cert.private_key_pem.write_to_path(str(paths["llm_tls_key_file"]))
    return paths


def _client_credentials(ca: trustme.CA, with_certificate: bool) -> grpc.ChannelCredentials:
    root = ca.cert_pem.bytes()
    if not with_certificate:
        return grpc.ssl_channel_credentials(root)
    client = ca.issue_cert("agent@example.com")
    return grpc.ssl_channel_credentials(
        root, client.private_key_pem.bytes(), client.cert_chain_pems[0].bytes()
    )


async def _complete(channel: grpc.aio.Channel) -> str:
    reply = await llm_pb2_grpc.LLMServiceStub(channel).Complete(
        llm_pb2.CompleteRequest(messages=user("over tls")), timeout=5
    )
    return reply.content


async def test_tls_serves_a_client_that_trusts_the_ca(
    start_gateway: Callable[..., Any], ca: trustme.CA, tmp_path: Path
) -> None:
    app: App = await start_gateway(llm_allow_plaintext=False, **_server_files(ca, tmp_path))
    async with grpc.aio.secure_channel(f"127.0.0.1:{app.port}", _client_credentials(ca, False)) as channel:
        assert await _complete(channel) == "emulator reply: over tls"


async def test_plaintext_to_a_tls_port_fails_cleanly_and_the_server_keeps_serving(
    start_gateway: Callable[..., Any], ca: trustme.CA, tmp_path: Path
) -> None:
    app: App = await start_gateway(llm_allow_plaintext=False, **_server_files(ca, tmp_path))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.port}") as plaintext:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _complete(plaintext)
    async with grpc.aio.secure_channel(f"127.0.0.1:{app.port}", _client_credentials(ca, False)) as channel:
        still = await _complete(channel)

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert still == "emulator reply: over tls"


async def test_mtls_refuses_a_client_without_a_certificate(
    start_gateway: Callable[..., Any], ca: trustme.CA, tmp_path: Path
) -> None:
    client_ca = tmp_path / "clients-ca.pem"
    ca.cert_pem.write_to_path(str(client_ca))
    app: App = await start_gateway(
        llm_allow_plaintext=False, llm_tls_client_ca_file=client_ca, **_server_files(ca, tmp_path)
    )
    target = f"127.0.0.1:{app.port}"
    async with grpc.aio.secure_channel(target, _client_credentials(ca, False)) as anonymous:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await _complete(anonymous)
    async with grpc.aio.secure_channel(target, _client_credentials(ca, True)) as known:
        served = await _complete(known)

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert served == "emulator reply: over tls"


def test_neither_tls_nor_explicit_plaintext_stops_the_start(emulators: Emulators) -> None:
    with pytest.raises(ConfigError, match="no TLS certificate"):
        build_app(make_settings(emulators, llm_allow_plaintext=False), port=0)


def test_half_a_tls_configuration_stops_the_start(emulators: Emulators, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="both LLM_TLS_CERT_FILE and LLM_TLS_KEY_FILE"):
        build_app(make_settings(emulators, llm_tls_cert_file=tmp_path / "x.pem"), port=0)
