"""JSON <-> protobuf for the HTTP routes, and the OpenAPI description, both from the descriptors.

Requests follow protobuf's JSON mapping (``google.protobuf.json_format``: proto field names or
lowerCamelCase, int64 as numbers or strings, oneofs as whichever member is set), with one
addition for people writing JSON by hand: a ``bytes`` field that carries a packed array
(``PackedTokenIds.token_ids``, ``ProbBatchRequest.cont_ids``, ...) may be a JSON array of numbers
instead of base64. Responses always use that array form, keep proto field names, write int64 as
numbers (the engine's counts are far below 2**53) and include fields at their default value, so
``{"count": 0}`` is a count and not a missing field.

Packed arrays are little-endian int64 except the fields named in ``PACKED_DTYPES``.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Callable

import numpy as np
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

__all__ = ["PACKED_DTYPES", "parse_request", "to_json", "snake_case", "openapi_schema", "JsonRequestError"]

# Packed ``bytes`` fields that are not int64: probabilities are float64, approx flags one byte each.
PACKED_DTYPES = {"probs": np.dtype("<f8"), "approx": np.dtype("u1")}
_INT64 = np.dtype("<i8")


class JsonRequestError(ValueError):
    """A JSON body that does not fit the RPC's request message (400)."""


def _dtype(field: FieldDescriptor) -> np.dtype:
    return PACKED_DTYPES.get(field.name, _INT64)


def snake_case(name: str) -> str:
    """RPC name -> route segment: NextTokenDistribution -> next_token_distribution."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


# ------------------------------------------------------------------------------------------------
# JSON -> request


def _pack_arrays(data: Any, desc: Descriptor, path: str) -> Any:
    """A copy of ``data`` in which packed-array fields given as JSON arrays are base64 strings."""
    if not isinstance(data, dict):
        return data  # json_format reports the type error with the field's name
    out = {}
    for key, value in data.items():
        field = desc.fields_by_name.get(key) or desc.fields_by_camelcase_name.get(key)
        if field is None or value is None:
            out[key] = value
        elif field.type == FieldDescriptor.TYPE_BYTES and isinstance(value, list):
            dtype = _dtype(field)
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
                raise JsonRequestError(f"{path}{key} must be an array of numbers (packed {dtype.name}) or base64")
            try:
                out[key] = base64.b64encode(np.asarray(value, dtype=dtype).tobytes()).decode()
            except (OverflowError, ValueError) as exc:
                raise JsonRequestError(f"{path}{key}: {exc}") from None
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            sub = field.message_type
            if field.is_repeated and isinstance(value, list):
                out[key] = [_pack_arrays(v, sub, f"{path}{key}[{i}].") for i, v in enumerate(value)]
            else:
                out[key] = _pack_arrays(value, sub, f"{path}{key}.")
        else:
            out[key] = value
    return out


def parse_request(cls, data: Any):
    """A ``cls`` message from a decoded JSON body; JsonRequestError saying what is wrong."""
    if not isinstance(data, dict):
        raise JsonRequestError(f"the body must be a JSON object (a {cls.DESCRIPTOR.name}), not {type(data).__name__}")
    try:
        return json_format.ParseDict(_pack_arrays(data, cls.DESCRIPTOR, ""), cls())
    except json_format.ParseError as exc:
        raise JsonRequestError(str(exc)) from None


# ------------------------------------------------------------------------------------------------
# response -> JSON

# Per message type: (name, converter or None for a plain scalar, has presence) of every field.
_Plan = list[tuple[str, Callable[[Any], Any] | None, bool]]
_PLANS: dict[str, _Plan] = {}


def _unpacker(dtype: np.dtype) -> Callable[[bytes], list]:
    return lambda b: np.frombuffer(b, dtype=dtype).tolist()


def _plan(desc: Descriptor) -> _Plan:
    plan = _PLANS.get(desc.full_name)
    if plan is not None:
        return plan
    plan = []
    for f in desc.fields:
        conv: Callable[[Any], Any] | None = None
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            conv = (lambda v: [to_json(m) for m in v]) if f.is_repeated else to_json
        elif f.type == FieldDescriptor.TYPE_BYTES and not f.is_repeated:
            conv = _unpacker(_dtype(f))
        elif f.type == FieldDescriptor.TYPE_ENUM:
            names = {v.number: v.name for v in f.enum_type.values}
            conv = (lambda v, n=names: [n.get(x, x) for x in v]) if f.is_repeated else (lambda v, n=names: n.get(v, v))
        elif f.is_repeated:
            conv = list
        plan.append((f.name, conv, f.has_presence and not f.is_repeated))
    _PLANS[desc.full_name] = plan
    return plan


def to_json(msg) -> dict:
    """A response message as a JSON-ready dict (see the module docstring for the conventions)."""
    out = {}
    for name, conv, presence in _plan(msg.DESCRIPTOR):
        if presence and not msg.HasField(name):
            continue
        value = getattr(msg, name)
        out[name] = value if conv is None else conv(value)
    return out


# ------------------------------------------------------------------------------------------------
# OpenAPI

_SCALARS = {
    FieldDescriptor.TYPE_INT64: {"type": "integer", "format": "int64"},
    FieldDescriptor.TYPE_UINT64: {"type": "integer", "format": "int64", "minimum": 0},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_UINT32: {"type": "integer", "format": "int32", "minimum": 0},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number", "format": "float"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_STRING: {"type": "string"},
}


def _field_schema(f: FieldDescriptor, schemas: dict) -> dict:
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        _message_schema(f.message_type, schemas)
        item = {"$ref": f"#/components/schemas/{f.message_type.full_name}"}
    elif f.type == FieldDescriptor.TYPE_BYTES:
        kind = "number" if _dtype(f).kind == "f" else "integer"
        item = {"oneOf": [{"type": "array", "items": {"type": kind}}, {"type": "string", "format": "byte"}],
                "description": f"packed little-endian {_dtype(f).name} values: a JSON array, or base64"}
    elif f.type == FieldDescriptor.TYPE_ENUM:
        item = {"type": "string", "enum": [v.name for v in f.enum_type.values]}
    else:
        item = dict(_SCALARS.get(f.type, {}))
    return {"type": "array", "items": item} if f.is_repeated else item


def _message_schema(desc: Descriptor, schemas: dict) -> None:
    if desc.full_name in schemas:
        return
    schema: dict = {"type": "object", "properties": {}, "additionalProperties": False}
    schemas[desc.full_name] = schema  # before the fields: messages may refer to each other
    for f in desc.fields:
        schema["properties"][f.name] = _field_schema(f, schemas)
    oneofs = [o for o in desc.oneofs if not (len(o.fields) == 1 and o.name == "_" + o.fields[0].name)]
    if oneofs:
        schema["description"] = "; ".join(
            f"at most one of {', '.join(x.name for x in o.fields)} ({o.name})" for o in oneofs)


def openapi_schema(service, routes: dict[str, Any], title: str, version: str) -> dict:
    """An OpenAPI 3.1 document for ``routes`` (path -> MethodDescriptor) of ``service``."""
    schemas: dict = {}
    error = {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}
    schemas["Error"] = error
    err_ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    paths: dict = {}
    for path, m in routes.items():
        _message_schema(m.input_type, schemas)
        _message_schema(m.output_type, schemas)
        out: dict = {"$ref": f"#/components/schemas/{m.output_type.full_name}"}
        content = {"application/json": {"schema": out}}
        if m.server_streaming:
            content = {"application/json": {"schema": {"type": "array", "items": out}},
                       "application/x-ndjson": {"schema": out}}
        paths[path] = {"post": {
            "operationId": m.name,
            "summary": f"{service.full_name}/{m.name}" + (" (a stream: a JSON array, or NDJSON with "
                                                           "Accept: application/x-ndjson)" if m.server_streaming else ""),
            "parameters": [{"name": "timeout", "in": "query", "required": False,
                            "description": "deadline in seconds (also the X-Request-Timeout header)",
                            "schema": {"type": "number"}}],
            "requestBody": {"required": False, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{m.input_type.full_name}"}}}},
            "responses": {"200": {"description": "OK", "content": content},
                          "4XX": {"description": "the request cannot be served as sent", **err_ref},
                          "5XX": {"description": "the server could not answer", **err_ref}},
        }}
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
