"""One two-way table between the engine's errors and gRPC status codes.

A server answers an error with the status code of its class and the class's name in the
trailing metadata ``ngram-error``; a client raises that same class (any other server's errors
by their code alone). So an error raised by NgramIndex behind a server reaches the client as
the class NgramIndex would have raised in process.
"""

from __future__ import annotations

import grpc

from engine.errors import (
    AuthenticationError,
    BuildError,
    ClientClosedError,
    DeadlineExceededError,
    IndexFormatError,
    IndexNotFoundError,
    InvalidQueryError,
    LimitExceededError,
    NgramError,
    NotSupportedError,
    RpcFailedError,
    ShardUnavailableError,
    TokenizerError,
    TokenizerMismatchError,
)

ERROR_METADATA_KEY = "ngram-error"

# (class, status code), subclasses before their bases: an error takes the first row it is an
# instance of. Every class an engine raises on purpose is here.
ERROR_STATUS: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (ShardUnavailableError, grpc.StatusCode.UNAVAILABLE),
    (LimitExceededError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (ClientClosedError, grpc.StatusCode.FAILED_PRECONDITION),
    (InvalidQueryError, grpc.StatusCode.INVALID_ARGUMENT),
    (TokenizerMismatchError, grpc.StatusCode.FAILED_PRECONDITION),
    (TokenizerError, grpc.StatusCode.FAILED_PRECONDITION),
    (DeadlineExceededError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (AuthenticationError, grpc.StatusCode.UNAUTHENTICATED),
    (IndexNotFoundError, grpc.StatusCode.DATA_LOSS),
    (IndexFormatError, grpc.StatusCode.DATA_LOSS),
    (NotSupportedError, grpc.StatusCode.UNIMPLEMENTED),
    (BuildError, grpc.StatusCode.FAILED_PRECONDITION),
    (RpcFailedError, grpc.StatusCode.UNKNOWN),
    (NgramError, grpc.StatusCode.FAILED_PRECONDITION),
    (TimeoutError, grpc.StatusCode.DEADLINE_EXCEEDED),  # raised as DeadlineExceededError on the client
)

# The class a client raises for a code that came without our metadata (another server, a proxy,
# gRPC itself); codes not here raise RpcFailedError.
CODE_DEFAULT: dict[grpc.StatusCode, type[NgramError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidQueryError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidQueryError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: LimitExceededError,
    grpc.StatusCode.FAILED_PRECONDITION: TokenizerError,
    grpc.StatusCode.UNAVAILABLE: ShardUnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: AuthenticationError,
    grpc.StatusCode.DATA_LOSS: IndexFormatError,
    grpc.StatusCode.UNIMPLEMENTED: NotSupportedError,
}

_BY_NAME: dict[str, type[NgramError]] = {
    cls.__name__: cls for cls, _ in ERROR_STATUS if issubclass(cls, NgramError)}


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str | None]:
    """(status code, the error class's name to send) of an exception raised while serving a call;
    anything not in the table is a bug: INTERNAL."""
    for cls, code in ERROR_STATUS:
        if isinstance(exc, cls):
            name = cls.__name__ if issubclass(cls, NgramError) else CODE_DEFAULT[code].__name__
            return code, name
    return grpc.StatusCode.INTERNAL, None


def error_class(code: grpc.StatusCode, name: str | None) -> type[NgramError]:
    """The class a client raises for a status code and the server's error name (if any)."""
    by_name = _BY_NAME.get(name) if name else None
    if by_name is not None:
        return by_name
    return CODE_DEFAULT.get(code, RpcFailedError)


def error_from_rpc(exc: grpc.RpcError, where: str = "") -> NgramError:
    """The engine exception for a failed call (``.code`` holds the status code)."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    name = next((v for k, v in (trailing or ()) if k == ERROR_METADATA_KEY), None)
    cls = error_class(code, name)
    msg = f"{details}" if not where else f"{where}: {details}"
    if cls is RpcFailedError:
        msg = f"{code.name}: {msg}"
    err = cls(msg)
    err.code = code
    return err
