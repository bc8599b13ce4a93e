"""Async Python client for the llm-grpc gateway (llm.v1.LLMService). `llm_grpc_client.agents` builds
tools, tool results, images, documents, response formats and reasoning control."""

from llm_grpc_client import agents, readable
from llm_grpc_client.client import AsyncLLMClient, LLMClient, TokenStream
from llm_grpc_client.errors import (
    DeadlineExceeded,
    InvalidArgument,
    LLMError,
    ModelNotAllowed,
    ProviderError,
    QuotaExceeded,
    RateLimited,
    Unavailable,
)
from llm_grpc_client.readable import FinishReason

readable.install()

__all__ = [
    "AsyncLLMClient",
    "DeadlineExceeded",
    "FinishReason",
    "InvalidArgument",
    "LLMClient",
    "LLMError",
    "ModelNotAllowed",
    "ProviderError",
    "QuotaExceeded",
    "RateLimited",
    "TokenStream",
    "Unavailable",
    "agents",
]
