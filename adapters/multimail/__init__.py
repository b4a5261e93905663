"""MultiMail: self-hostable email infrastructure for AI agents.

The package root holds the SDK only, so ``import multimail`` stays light (httpx, no server
stack): ``multimail.Client`` / ``multimail.AsyncClient`` and the exceptions they raise.
The server lives in submodules (``multimail.api``, ``multimail.service``, …).
"""

from multimail.client import (
    APIConnectionError,
    AsyncClient,
    AuthenticationError,
    Client,
    Conflict,
    MultimailAPIError,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    RateLimited,
    Result,
    ServerError,
    ValidationError,
)

__version__ = "0.1.0"

__all__ = [
    "APIConnectionError",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "Conflict",
    "MultimailAPIError",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "RateLimited",
    "Result",
    "ServerError",
    "ValidationError",
    "__version__",
]
