"""The OpenAPI document describes the whole API: every operation has a chosen name, every field
(at any depth, in components and inline) and parameter a description, every request body an
example that the body's own model accepts."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from pydantic import BaseModel

from proxy_failover.entrypoints.api import create_app, schemas, webhooks
from proxy_failover.entrypoints.api.openapi_docs import REQUEST_EXAMPLES
from proxy_failover.entrypoints.api.routes import envoy
from tests.helpers.api import api_settings

_NAMED = re.compile(r"[a-z][A-Za-z]+")


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    app = create_app(api_settings("sqlite+aiosqlite:///:memory:"))
    return app.openapi()


def _operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def test_every_operation_has_a_chosen_unique_name(document: dict[str, Any]) -> None:
    ids = [operation["operationId"] for _, _, operation in _operations(document)]
    generated = [i for i in ids if not _NAMED.fullmatch(i)]
    assert generated == [], "add these routes to openapi_docs.OPERATION_IDS"
    assert len(ids) == len(set(ids))
    by_route = {(m, p): o["operationId"] for m, p, o in _operations(document)}
    assert by_route[("POST", "/proxy/failover/config")] == "createFailoverConfig"
    assert by_route[("DELETE", "/proxy/failover/config/{proxyId}")] == "deleteFailoverConfig"


def _undescribed_fields(schema: Any, where: str) -> list[str]:
    """Fields without a description in ``schema``, at any depth: nested properties, array items,
    map values and every branch of anyOf/oneOf/allOf (a ``$ref`` is walked where it is defined)."""
    if not isinstance(schema, dict):
        return []
    missing = []
    for field, prop in (schema.get("properties") or {}).items():
        if not prop.get("description"):
            missing.append(f"{where}.{field}")
        missing += _undescribed_fields(prop, f"{where}.{field}")
    for key in ("items", "additionalProperties"):
        missing += _undescribed_fields(schema.get(key), f"{where}[{key}]")
    for key in ("anyOf", "oneOf", "allOf"):
        for n, branch in enumerate(schema.get(key) or []):
            missing += _undescribed_fields(branch, f"{where}<{key} {n}>")
    return missing


def test_every_field_and_parameter_has_a_description(document: dict[str, Any]) -> None:
    missing = [
        field
        for name, schema in document["components"]["schemas"].items()
        for field in _undescribed_fields(schema, name)
    ]
    # schemas written inline in an operation (request or response) rather than as a component
    for method, path, operation in _operations(document):
        bodies = [operation.get("requestBody", {}), *operation["responses"].values()]
        for body in bodies:
            for media in (body.get("content") or {}).values():
                missing += _undescribed_fields(media.get("schema"), f"{method} {path}")
    missing += [
        f"{method} {path} parameter {parameter['name']}"
        for method, path, operation in _operations(document)
        for parameter in operation.get("parameters", [])
        if not parameter.get("description")
    ]
    assert missing == [], "describe them in openapi_docs.FIELD_DOCS (or on the parameter)"


def test_every_request_body_has_an_example_its_model_accepts(document: dict[str, Any]) -> None:
    bodies = {}
    for method, path, operation in _operations(document):
        if "requestBody" not in operation:
            continue
        content = operation["requestBody"]["content"]["application/json"]
        schema = _resolve(document, content["schema"])
        examples = schema.get("examples") or content.get("examples") or content.get("example")
        assert examples, f"{method} {path}: no example"
        bodies[schema["title"]] = examples
    models: dict[str, type[BaseModel]] = {
        name: model
        for module in (schemas, webhooks)
        for name, model in vars(module).items()
        if isinstance(model, type) and issubclass(model, schemas.RequestModel)
    }
    models["DiscoveryRequest"] = envoy.DiscoveryRequest  # Envoy's own (snake_case) shape
    assert set(bodies) <= set(REQUEST_EXAMPLES)
    for title, examples in bodies.items():
        for example in examples:
            models[title].model_validate_json(json.dumps(example))  # strict, as the API reads it
