"""Async Python client for the llm-grpc gateway (llm.v1.LLMService)."""

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

__all__ = [
    "AsyncLLMClient",
    "DeadlineExceeded",
    "InvalidArgument",
    "LLMClient",
    "LLMError",
    "ModelNotAllowed",
    "ProviderError",
    "QuotaExceeded",
    "RateLimited",
    "TokenStream",
    "Unavailable",
]
