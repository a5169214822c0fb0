"""What the HTTP routes hand the gRPC servicer instead of a ``grpc.ServicerContext``, and how a
gRPC status becomes an HTTP one (shared by app.py's routes and infinigram.py's ``POST /``)."""

from __future__ import annotations

import time

import grpc
from starlette.responses import JSONResponse

__all__ = ["HTTP_STATUS", "RpcError", "CallContext"]

C = grpc.StatusCode
HTTP_STATUS = {
    C.OK: 200,
    C.INVALID_ARGUMENT: 400,
    C.OUT_OF_RANGE: 400,
    C.UNAUTHENTICATED: 401,
    C.PERMISSION_DENIED: 403,
    C.NOT_FOUND: 404,
    C.ALREADY_EXISTS: 409,
    C.ABORTED: 409,
    C.FAILED_PRECONDITION: 409,  # e.g. a text query to an index without a tokenizer
    C.RESOURCE_EXHAUSTED: 429,
    C.CANCELLED: 499,  # the client closed the request (nginx's convention)
    C.UNIMPLEMENTED: 501,
    C.UNAVAILABLE: 503,
    C.DEADLINE_EXCEEDED: 504,
}  # anything else (INTERNAL, UNKNOWN, DATA_LOSS) is 500


class RpcError(Exception):
    """A call that ends with a gRPC status other than OK (what ``context.abort`` raises here)."""

    def __init__(self, code: grpc.StatusCode, message: str, http_status: int | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        # A transport-level status (413) where no gRPC code says it.
        self.http_status = http_status or HTTP_STATUS.get(code, 500)

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"code": self.code.name, "message": self.message}}, status_code=self.http_status)


class CallContext:
    """What the servicer's handlers use of ``grpc.ServicerContext``, for one HTTP request."""

    __slots__ = ("_deadline", "_peer", "_metadata", "cancelled", "code", "details")

    def __init__(self, deadline: float | None, peer: str, metadata: tuple = ()):
        self._deadline = deadline  # time.monotonic() value, or None
        self._peer = peer
        self._metadata = metadata
        self.cancelled = False
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def is_active(self) -> bool:
        return not self.cancelled and (self._deadline is None or time.monotonic() < self._deadline)

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> tuple:
        return self._metadata

    def abort(self, code: grpc.StatusCode, details: str):
        raise RpcError(code, details)

    def set_code(self, code: grpc.StatusCode) -> None:
        self.code = code

    def set_details(self, details: str) -> None:
        self.details = details

    def set_trailing_metadata(self, metadata) -> None:
        pass
