"""Every request schema of the app states exactly core's limits and core's choices.

The schemas are found by walking the app's OpenAPI document — every operation's parameters and
request body, following ``$ref`` into nested models — never from a hand-written list, so a route
or field added later is checked too. Each constrained field must be named in ``core.limits.FIELDS``
and carry that limit's constraints exactly; each choice must be the values of one core enum.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator
from typing import Any

import pytest

from proxy_failover.config import Settings
from proxy_failover.core import limits, model, webhooks
from proxy_failover.core.limits import Limit
from proxy_failover.entrypoints.api import create_app

_NUMBER_KEYS = ("minimum", "maximum")
_CONSTRAINT_KEYS = frozenset(
    {
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
    }
)
#: Every enum core defines: a choice in a request must list one of them.
_CORE_ENUMS: dict[str, type[enum.Enum]] = {
    name: value
    for module in (model, webhooks)
    for name, value in vars(module).items()
    if isinstance(value, type)
    and issubclass(value, enum.Enum)
    and value.__module__ == module.__name__
}
_FILTER = re.compile(r"^\^\(\|(.*)\)\$$")


def _openapi() -> dict[str, Any]:
    settings = Settings(database_url="sqlite+aiosqlite:///unused.db", jwt_secret="s" * 40)
    app = create_app(settings)  # the document needs no database: nothing is opened
    return app.openapi()


SPEC = _openapi()


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = SPEC["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _fields(
    schema: dict[str, Any], name: str, where: str
) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(where, field name, schema) for a field and everything nested in it."""
    schema = _resolve(schema)
    wrapper = any(key in schema for key in ("anyOf", "oneOf", "allOf"))
    if not wrapper and schema.get("type") != "null":  # the options of a wrapper are the fields
        yield where, name, schema
    for option in schema.get("anyOf", []) + schema.get("oneOf", []) + schema.get("allOf", []):
        yield from _fields(option, name, where)
    if "items" in schema:
        yield from _fields(schema["items"], f"{name}[]", where)
    for prop, sub in schema.get("properties", {}).items():
        yield from _fields(sub, prop, f"{where}.{prop}")


def request_fields() -> list[tuple[str, str, dict[str, Any]]]:
    found: list[tuple[str, str, dict[str, Any]]] = []
    for path, operations in SPEC["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "Authorization":
                    continue
                found += _fields(
                    parameter["schema"], parameter["name"], f"{where} {parameter['name']}"
                )
            for content in operation.get("requestBody", {}).get("content", {}).values():
                found += _fields(content["schema"], "(body)", f"{where} body")
    return found


FIELDS = request_fields()


def _expected(limit: Limit) -> dict[str, Any]:
    """The JSON Schema keywords a core limit must appear as."""
    lists = limit.min_items is not None or limit.max_items is not None or limit.items is not None
    pairs = {
        "minimum": limit.minimum,
        "maximum": limit.maximum,
        "minItems" if lists else "minLength": limit.min_items if lists else limit.min_length,
        "maxItems" if lists else "maxLength": limit.max_items if lists else limit.max_length,
        "pattern": limit.pattern,
    }
    return {key: value for key, value in pairs.items() if value is not None}


def _limit_for(name: str) -> Limit | None:
    if name.endswith("[]"):
        parent = limits.FIELDS.get(name[:-2])
        return None if parent is None else parent.items
    return limits.FIELDS.get(name)


def test_the_walk_finds_every_request_body_and_parameter() -> None:
    bodies = {where for where, name, _ in FIELDS if name == "(body)"}
    operations_with_body = sum(
        1 for ops in SPEC["paths"].values() for op in ops.values() if "requestBody" in op
    )
    assert len(bodies) == operations_with_body >= 10
    names = {name for _, name, _ in FIELDS}
    assert {"instanceName", "priority", "backupInstanceIds", "limit", "Last-Event-ID"} <= names


@pytest.mark.parametrize(("where", "name", "schema"), FIELDS, ids=[f[0] for f in FIELDS])
def test_each_constraint_is_cores_limit(where: str, name: str, schema: dict[str, Any]) -> None:
    stated = {key: schema[key] for key in _CONSTRAINT_KEYS if key in schema}
    filter_pattern = _FILTER.match(str(stated.get("pattern", "")))
    if filter_pattern is not None:  # a query filter: one enum's values, or empty for any
        assert set(stated) == {"pattern"}, where
        values = [re.sub(r"\\(.)", r"\1", v) for v in filter_pattern.group(1).split("|")]
        assert any(values == [m.value for m in e] for e in _CORE_ENUMS.values()), where
        return
    limit = _limit_for(name)
    if limit is None:
        assert not stated, f"{where}: {stated} but core.limits.FIELDS has no {name!r}"
        return
    expected = _expected(limit)
    for key in _NUMBER_KEYS:
        if key in stated:
            stated[key] = float(stated[key])
            expected[key] = float(expected[key]) if key in expected else None
    assert stated == expected, f"{where}: schema says {stated}, core says {expected}"


@pytest.mark.parametrize(
    ("where", "name", "schema"),
    [f for f in FIELDS if "enum" in f[2]],
    ids=[f[0] for f in FIELDS if "enum" in f[2]],
)
def test_each_choice_is_a_core_enum(where: str, name: str, schema: dict[str, Any]) -> None:
    values = schema["enum"]
    matches = [e for e in _CORE_ENUMS.values() if values == [m.value for m in e]]
    closing = [model.EventStatus.COMPLETED.value, model.EventStatus.FAILED.value]
    if name == "status" and values == closing:
        return  # complete: the two closing statuses of core's EventStatus
    assert matches, f"{where}: {values} is no core enum"


def test_the_drifted_limits_are_cores() -> None:
    instance = _resolve({"$ref": "#/components/schemas/InstanceDataBody"})["properties"]
    assert instance["instanceName"]["maxLength"] == 128
    assert (instance["priority"]["minimum"], instance["priority"]["maximum"]) == (
        -1_000_000,
        1_000_000,
    )
