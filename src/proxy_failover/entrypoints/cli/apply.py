"""``apply -f FILE.yaml``: make proxies and their instances what a file says, by name, idempotently.

The file (see ``examples/proxies.yaml``)::

    proxies:
      edge:                      # proxyId
        config: {healthCheckIntervalSeconds: 5, ...}   # any field of POST /proxy/failover/config
        instances:
          relay-a: {endpoint: "127.0.0.1:9101", priority: 10}   # instanceName: its fields

Decisions (documented in docs/cli.md): fields the file does not name keep their current values
(as a partial POST does; nothing is reset to a default behind the operator's back); instances and
proxies the file does not name are kept unless ``--prune`` is given; ``instanceType`` cannot change
in place. The plan is computed with the core's own validation (``build_config``,
``build_instance``, ``apply_instance_patch``), so a typo or a value out of range is refused before
anything is sent, and a second apply of the same file finds nothing to change.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from proxy_failover.client import FailoverClient
from proxy_failover.core.errors import FailoverError, InvalidInput
from proxy_failover.core.fields import camel
from proxy_failover.core.model import FailoverConfig, Instance
from proxy_failover.core.validation import (
    INSTANCE_PATCH_FIELDS,
    apply_instance_patch,
    build_config,
    build_instance,
    validate_proxy_id,
)
from proxy_failover.entrypoints.cli.common import (
    DEFAULT_URL,
    TokenOption,
    UrlOption,
    connect,
    fail,
)

#: Fields of a stored configuration that are not declared by the file.
_CONFIG_BOOKKEEPING = frozenset({"id", "proxy_id", "user_id", "created_at", "updated_at"})
_CAMEL_HUMP = re.compile(r"(?<!^)(?=[A-Z])")


class Action(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"


@dataclass
class Change:
    """One write of the plan, with the lines that show it as a diff."""

    action: Action
    proxy_id: str
    instance_name: str | None = None  # None: the proxy's configuration
    payload: dict[str, Any] = field(default_factory=dict)
    instance_id: str | None = None
    lines: list[tuple[str, str]] = field(default_factory=list)  # (sign, "field: value")

    @property
    def target(self) -> str:
        if self.instance_name is None:
            return f"proxy {self.proxy_id}"
        return f"instance {self.proxy_id}/{self.instance_name}"


@dataclass(frozen=True)
class DesiredProxy:
    proxy_id: str
    config: dict[str, Any]
    instances: dict[str, dict[str, Any]]


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice (a second ``relay-a:`` would silently win)."""


def _no_duplicates(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicates)


def _mapping(value: object, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(key, str) for key in value):
        raise ValueError(f"{where} must be a mapping with string keys")
    return value


def load_file(path: Path) -> list[DesiredProxy]:
    """Parse and shape-check the file; field values are checked later by the core."""
    try:
        document = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(str(error)) from None
    top = _mapping(document, "the file")
    unknown = set(top) - {"proxies"}
    if unknown:
        raise ValueError(f"unknown top-level key(s): {', '.join(sorted(unknown))}")
    desired: list[DesiredProxy] = []
    for proxy_id, body in _mapping(top.get("proxies"), "proxies").items():
        where = f"proxies.{proxy_id}"
        try:
            validate_proxy_id(proxy_id)
        except FailoverError as error:
            raise ValueError(f"{where}: {error.message}") from None
        spec = _mapping(body, where)
        extra = set(spec) - {"config", "instances"}
        if extra:
            raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
        instances = {
            name: _mapping(data, f"{where}.instances.{name}")
            for name, data in _mapping(spec.get("instances"), f"{where}.instances").items()
        }
        desired.append(DesiredProxy(proxy_id, _mapping(spec.get("config"), where), instances))
    return desired


def _snake(key: str) -> str:
    return _CAMEL_HUMP.sub("_", key).lower()


def _show(value: Any) -> str:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {camel(key): item for key, item in dataclasses.asdict(value).items()}
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str, sort_keys=True)


def _differences(before: Any, after: Any, fields: list[str]) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    for name in fields:
        old, new = getattr(before, name), getattr(after, name)
        if old != new:
            lines += [
                ("-", f"{camel(name)}: {_show(old)}"),
                ("+", f"{camel(name)}: {_show(new)}"),
            ]
    return lines


def _config_change(
    desired: DesiredProxy, existing: FailoverConfig | None, now: datetime
) -> Change | None:
    owner = existing.user_id if existing is not None else ""
    wanted = build_config(desired.proxy_id, owner, desired.config, existing, now)
    if existing is None:
        lines = [
            ("+", f"{camel(_snake(key))}: {_show(getattr(wanted, _snake(key)))}")
            for key in desired.config
        ]
        return Change(Action.CREATE, desired.proxy_id, payload=desired.config, lines=lines)
    fields = [
        f.name for f in dataclasses.fields(FailoverConfig) if f.name not in _CONFIG_BOOKKEEPING
    ]
    lines = _differences(existing, wanted, fields)
    if not lines:
        return None
    return Change(Action.UPDATE, desired.proxy_id, payload=desired.config, lines=lines)


def _declared_fields() -> list[str]:
    """What a file declares of an existing instance, as core lets a client change it in place
    (its name is the key; its type cannot change); everything else the service keeps."""
    return [f.name for f in dataclasses.fields(Instance) if f.name in INSTANCE_PATCH_FIELDS]


def _instance_change(
    proxy_id: str, name: str, data: dict[str, Any], existing: Instance | None, now: datetime
) -> Change | None:
    if existing is None:
        payload = {"instanceName": name, **data}
        created = build_instance(proxy_id, "", "planned", payload, now)
        lines = [
            ("+", f"{camel(_snake(key))}: {_show(getattr(created, _snake(key)))}") for key in data
        ]
        return Change(Action.CREATE, proxy_id, name, payload=payload, lines=lines)
    patch = {key: value for key, value in data.items() if _snake(key) != "instance_type"}
    for key, value in data.items():
        if _snake(key) == "instance_type" and value != existing.instance_type:
            raise InvalidInput(
                f"instanceType cannot change in place ({existing.instance_type!r} -> {value!r}):"
                " delete the instance or give it a new name",
                details={"field": "instanceType"},
            )
    wanted = apply_instance_patch(existing, patch, now)
    fields = _declared_fields()
    lines = _differences(existing, wanted, fields)
    if not lines:
        return None
    changed = {
        key: value
        for key, value in patch.items()
        if getattr(existing, _snake(key)) != getattr(wanted, _snake(key))
    }
    return Change(Action.UPDATE, proxy_id, name, changed, existing.id, lines)


def plan(
    client: FailoverClient, desired: list[DesiredProxy], *, prune: bool, now: datetime
) -> list[Change]:
    """The writes that make the service match ``desired``: configs, then updates, creates and
    deletes of instances; with ``prune``, proxies the caller sees that the file does not name."""
    changes: list[Change] = []
    for proxy in desired:
        where = f"proxies.{proxy.proxy_id}"
        try:
            existing = client.get_failover_configuration(proxy.proxy_id)
            change = _config_change(proxy, existing, now)
        except FailoverError as error:
            raise ValueError(f"{where}.config: {error.message}") from None
        if change is not None:
            changes.append(change)
        current: dict[str, Instance] = {}
        if existing is not None:
            current = {i.instance_name: i for i in client.get_proxy_instances(proxy.proxy_id)}
        for name, data in proxy.instances.items():
            try:
                change = _instance_change(proxy.proxy_id, name, data, current.get(name), now)
            except FailoverError as error:
                raise ValueError(f"{where}.instances.{name}: {error.message}") from None
            if change is not None:
                changes.append(change)
        if prune:
            changes += [
                Change(Action.DELETE, proxy.proxy_id, name, instance_id=instance.id)
                for name, instance in current.items()
                if name not in proxy.instances
            ]
    if prune:
        named = {proxy.proxy_id for proxy in desired}
        changes += [
            Change(Action.DELETE, summary.proxy_id)
            for summary in client.list_proxies()
            if summary.proxy_id not in named
        ]
    return sorted(changes, key=_execution_order)


def _execution_order(change: Change) -> int:
    """Configurations first (an instance needs its proxy), then instance updates, creates and
    deletes (deleting the active instance moves the role to one that exists by then), proxies
    last."""
    if change.instance_name is None:
        return 4 if change.action is Action.DELETE else 0
    return {Action.UPDATE: 1, Action.CREATE: 2, Action.DELETE: 3}[change.action]


def _print_plan(changes: list[Change]) -> None:
    colours = {"+": "green", "-": "red", "~": "yellow"}
    signs = {Action.CREATE: "+", Action.UPDATE: "~", Action.DELETE: "-"}
    for change in changes:
        sign = signs[change.action]
        typer.secho(f"{sign} {change.action} {change.target}", fg=colours[sign], bold=True)
        for line_sign, text in change.lines:
            typer.secho(f"  {line_sign} {text}", fg=colours[line_sign])
    counts = {action: sum(c.action is action for c in changes) for action in Action}
    typer.echo(
        f"plan: {counts[Action.CREATE]} to create, {counts[Action.UPDATE]} to update, "
        f"{counts[Action.DELETE]} to delete"
    )


def _execute(client: FailoverClient, change: Change) -> None:
    if change.instance_name is None:
        if change.action is Action.DELETE:
            client.delete_failover_configuration(change.proxy_id)
        else:
            client.create_failover_configuration(change.proxy_id, change.payload)
    elif change.action is Action.CREATE:
        client.register_proxy_instance(change.proxy_id, change.payload)
    elif change.action is Action.UPDATE:
        assert change.instance_id is not None
        client.update_instance(change.instance_id, change.payload)
    else:
        assert change.instance_id is not None
        client.delete_instance(change.instance_id)


def apply(
    file: Annotated[
        Path,
        typer.Option(
            "--file", "-f", help="YAML file of proxies and instances.", show_default=False
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan as a diff; change nothing.")
    ] = False,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Also delete instances, and proxies you can see, that the file does not name.",
        ),
    ] = False,
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = None,
) -> None:
    """Create or update proxies and instances to match FILE, by name.

    Idempotent: a second run of the same file changes nothing.
    """
    try:
        desired = load_file(file)
    except ValueError as error:
        fail(f"{file}: {error}", code=2)
    with connect(url, token) as client:
        try:
            changes = plan(client, desired, prune=prune, now=datetime.now(UTC))
        except ValueError as error:
            fail(f"{file}: {error}", code=2)
        if not changes:
            typer.echo("no changes: the service already matches the file")
            return
        _print_plan(changes)
        if dry_run:
            typer.echo("dry run: nothing was changed")
            return
        for change in changes:
            _execute(client, change)
        typer.echo(f"applied {len(changes)} change(s)")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command()(apply)
