"""The gateway's OpenAPI 3.1 document, written by hand to match :mod:`.gateway`'s routes.

Hand-written because the gateway is a raw ASGI app with no framework to derive it from; a
test checks every route here is served and every served route is here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["openapi_document"]

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _errors(*statuses: int, v2: bool = True) -> dict[str, Any]:
    schema = _ref("V2Error" if v2 else "Error")
    words = {
        400: "Bad request: malformed body or contract violation",
        401: "No token, or one that is not valid (when predictions need tokens)",
        403: "The token's team or scopes do not cover this endpoint",
        404: "Unknown model or version",
        413: "Body too large",
        429: "Overloaded: retry after the Retry-After header's seconds",
        500: "The model's answer broke the contract",
        503: "Not ready, or the worker failed",
        504: "Deadline exceeded",
    }
    return {str(s): _json(schema, words[s]) for s in statuses}


_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
_INFER_ERRORS = (400, 404, 413, 429, 500, 503, 504)


def _health(summary: str) -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "responses": {"200": {"description": "Yes"}, **_errors(503)},
        }
    }


def _model_paths(prefix: str, params: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        prefix: {
            "get": {
                "summary": "Model metadata: inputs and outputs from the endpoint's contract",
                "parameters": params,
                "responses": {
                    "200": _json(_ref("ModelMetadata"), "Metadata"),
                    **_errors(404),
                },
            }
        },
        f"{prefix}/ready": {
            "get": {
                "summary": "Is the model ready?",
                "parameters": params,
                "responses": {"200": {"description": "Ready"}, **_errors(404, 503)},
            }
        },
        f"{prefix}/infer": {
            "post": {
                "summary": "Open Inference Protocol v2 inference (JSON or binary tensors)",
                "parameters": [
                    *params,
                    _header("Inference-Header-Content-Length", "integer"),
                    _header("modelplane-timeout-ms", "number", minimum=100),
                    _header("x-request-id", "string"),
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        _JSON: {"schema": _ref("InferRequest")},
                        "application/octet-stream": {"schema": {"type": "string"}},
                    },
                },
                "responses": {
                    "200": _json(_ref("InferResponse"), "Outputs"),
                    **_errors(*_INFER_ERRORS),
                },
            }
        },
    }


def _header(name: str, kind: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "schema": {"type": kind, **schema}}


def _schemas() -> dict[str, Any]:
    tensor = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "parameters": {"type": "object"},
            "data": {"type": "array"},
        },
    }
    meta_tensor = {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
        },
    }
    return {
        "Tensor": tensor,
        **_infer_schemas(),
        "ModelMetadata": {
            "type": "object",
            "required": ["name", "versions", "platform", "inputs", "outputs"],
            "properties": {
                "name": {"type": "string"},
                "versions": {"type": "array", "items": {"type": "string"}},
                "platform": {"type": "string"},
                "inputs": {"type": "array", "items": meta_tensor},
                "outputs": {"type": "array", "items": meta_tensor},
            },
        },
        **_other_schemas(),
    }


def _infer_schemas() -> dict[str, Any]:
    return {
        "InferRequest": {
            "type": "object",
            "required": ["inputs"],
            "properties": {
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "inputs": {"type": "array", "items": _ref("Tensor")},
                "outputs": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string"},
                            "parameters": {"type": "object"},
                        },
                    },
                },
            },
        },
        "InferResponse": {
            "type": "object",
            "required": ["model_name", "outputs"],
            "properties": {
                "model_name": {"type": "string"},
                "model_version": {"type": "string"},
                "id": {"type": "string"},
                "parameters": {"type": "object"},
                "outputs": {"type": "array", "items": _ref("Tensor")},
            },
        },
    }


def _other_schemas() -> dict[str, Any]:
    return {
        "ServerMetadata": {
            "type": "object",
            "required": ["name", "version", "extensions"],
            "properties": {
                "name": {"type": "string"},
                "version": {"type": "string"},
                "extensions": {"type": "array", "items": {"type": "string"}},
            },
        },
        "V2Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}},
        },
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["code", "message", "details"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "details": {"type": "array", "items": {"type": "object"}},
                    },
                }
            },
        },
        "Records": {
            "type": "object",
            "required": ["instances"],
            "properties": {
                "instances": {"type": "array", "minItems": 1, "items": {"type": "object"}}
            },
        },
        "Predictions": {
            "type": "object",
            "required": ["predictions"],
            "properties": {
                "predictions": {"type": "array"},
                "model_version": {"type": "string"},
                "request_id": {"type": "string"},
            },
        },
        "Outcome": {
            "type": "object",
            "required": ["request_id"],
            "additionalProperties": False,
            "properties": {
                "request_id": {"type": "string", "description": "The answer's request id"},
                "row": {"type": "integer", "minimum": 0, "description": "Its row (0)"},
                "label": {"type": "number", "description": "The ground truth (0/1: binary)"},
                "values": {
                    "type": "object",
                    "additionalProperties": {"type": "number"},
                    "description": "Named business outcomes (e.g. loss, revenue)",
                },
            },
        },
        "Outcomes": {
            "type": "object",
            "required": ["outcomes"],
            "additionalProperties": False,
            "properties": {"outcomes": {"type": "array", "items": _ref("Outcome")}},
        },
        "Stored": {
            "type": "object",
            "required": ["stored", "outcomes", "labels", "values", "feedback_request_id"],
            "properties": {
                "stored": {"type": "integer", "description": "Values written: labels + values"},
                "outcomes": {
                    "type": "integer",
                    "description": "Answered rows (request id and row) given an outcome",
                },
                "labels": {"type": "integer", "description": "Labels (ground truth) stored"},
                "values": {"type": "integer", "description": "Business values stored"},
                "feedback_request_id": {
                    "type": "string",
                    "description": "This feedback call's own id (as modelplane-request-id),"
                    " not an id fed back",
                },
            },
        },
    }


def _records_paths() -> dict[str, Any]:
    return {
        "/v1/endpoints": {
            "get": {
                "summary": "Endpoints served, with their model versions",
                "responses": {"200": _json({"type": "object"}, "Endpoints")},
            }
        },
        "/v1/endpoints/{name}:predict": {
            "post": {
                "summary": "Records JSON inference: an object per row, fields as in the contract",
                "parameters": [
                    _NAME,
                    _header("modelplane-timeout-ms", "number", minimum=100),
                    _header("x-request-id", "string"),
                ],
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": _ref("Records")}},
                },
                "responses": {
                    "200": _json(_ref("Predictions"), "Predictions"),
                    **_errors(*_INFER_ERRORS, v2=False),
                },
            }
        },
        "/v1/endpoints/{name}:feedback": {
            "post": {
                "summary": "Outcomes of earlier answers, by request id (one, or a batch)",
                "parameters": [_NAME, _header("x-request-id", "string")],
                "requestBody": {
                    "required": True,
                    "content": {_JSON: {"schema": {"oneOf": [_ref("Outcome"), _ref("Outcomes")]}}},
                },
                "responses": {
                    "200": _json(
                        _ref("Stored"), "What was stored: outcomes (rows), labels, values"
                    ),
                    **_errors(400, 401, 403, 404, 413, v2=False),
                },
            }
        },
    }


def openapi_document(title: str, version: str) -> dict[str, Any]:
    """The whole document for a gateway called ``title`` at ``version``."""
    text = {
        "200": {"description": "Text", "content": {"text/plain": {"schema": {"type": "string"}}}}
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": {
            "/v2/health/live": _health("Is the server live?"),
            "/v2/health/ready": _health("Is every endpoint ready?"),
            "/v2": {
                "get": {
                    "summary": "Server metadata",
                    "responses": {"200": _json(_ref("ServerMetadata"), "Metadata")},
                }
            },
            **_model_paths("/v2/models/{name}", [_NAME]),
            **_model_paths("/v2/models/{name}/versions/{version}", [_NAME, _VERSION]),
            **_records_paths(),
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": text}},
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
                }
            },
        },
        "components": {"schemas": _schemas()},
    }
