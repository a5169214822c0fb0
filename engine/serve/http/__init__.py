"""HTTP/JSON API, infini-gram's API and the web explorer, over the gRPC servicer (see app.py)."""

from engine.serve.http.app import HttpApi, create_app, rpc_routes
from engine.serve.http.context import HTTP_STATUS, CallContext, RpcError
from engine.serve.http.runner import HttpServer

__all__ = ["HTTP_STATUS", "CallContext", "HttpApi", "HttpServer", "RpcError", "create_app", "rpc_routes"]
