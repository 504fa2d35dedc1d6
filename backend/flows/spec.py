"""Parsing a flow file into a checked, typed specification.

YAML comes from administrators and may be wrong or hostile: it is size-capped, read with the
safe loader, and every field is type-checked here so the compiler never sees a surprise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from backend.errors import FlowError

SCHEMA_VERSION = 1
MAX_FILE_BYTES = 256 * 1024
END = "END"
ACTIONS = frozenset({"submit_report", "quick_exit"})
SLOT_TYPES = frozenset({"choice", "text"})


@dataclass(frozen=True)
class ButtonSpec:
    id: str
    label: str
    next: str


@dataclass(frozen=True)
class SlotSpec:
    name: str
    type: str
    choices: tuple[str, ...] = ()
    max_length: int = 4000


@dataclass(frozen=True)
class StepSpec:
    name: str
    say: str | None = None
    ask: str | None = None
    slot: str | None = None
    buttons: tuple[ButtonSpec, ...] = ()
    action: str | None = None
    next: str | None = None

    @property
    def waits(self) -> bool:
        """True for a step that waits for the victim's input."""
        return bool(self.buttons) or self.ask is not None


@dataclass(frozen=True)
class CommandSpec:
    command: str
    action: str | None
    restart: bool


@dataclass(frozen=True)
class FlowSpec:
    name: str
    start: str
    slots: Mapping[str, SlotSpec]
    steps: Mapping[str, StepSpec]
    commands: Mapping[str, CommandSpec]


def load_yaml(path: Path) -> Any:
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise FlowError(f"{path}: {size} bytes is over the {MAX_FILE_BYTES}-byte limit")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise FlowError(f"{path}: not valid YAML ({exc})") from None


def parse_flow(data: Any, source: str) -> FlowSpec:
    doc = _mapping(data, source)
    if doc.get("schema") != SCHEMA_VERSION:
        raise FlowError(f"{source}: schema must be {SCHEMA_VERSION}")
    name = _str(doc.get("flow"), f"{source}: flow")
    slots = {
        slot_name: _slot(slot_name, raw, f"{source}: slots.{slot_name}")
        for slot_name, raw in _mapping(doc.get("slots", {}), f"{source}: slots").items()
    }
    steps = {
        step_name: _step(step_name, raw, f"{source}: steps.{step_name}")
        for step_name, raw in _mapping(doc.get("steps"), f"{source}: steps").items()
    }
    commands = {
        command: _command(command, raw, f"{source}: commands.{command}")
        for command, raw in _mapping(doc.get("commands", {}), f"{source}: commands").items()
    }
    start = _str(doc.get("start"), f"{source}: start")
    spec = FlowSpec(name, start, slots, steps, commands)
    _check_references(spec, source)
    return spec


def _check_references(spec: FlowSpec, source: str) -> None:
    targets = set(spec.steps) | {END}
    if spec.start not in spec.steps:
        raise FlowError(f"{source}: start step {spec.start!r} does not exist")
    for step in spec.steps.values():
        where = f"{source}: steps.{step.name}"
        nexts = [b.next for b in step.buttons] + ([step.next] if step.next else [])
        for target in nexts:
            if target not in targets:
                raise FlowError(f"{where}: unknown target {target!r}")
        if step.slot is not None and step.slot not in spec.slots:
            raise FlowError(f"{where}: slot {step.slot!r} is not declared")
        if step.action is not None and step.action not in ACTIONS:
            raise FlowError(f"{where}: unknown action {step.action!r}")
        if not step.buttons and step.next is None:
            raise FlowError(f"{where}: needs `next` or buttons")
    for command in spec.commands.values():
        if command.action is not None and command.action not in ACTIONS:
            raise FlowError(f"{source}: commands.{command.command}: unknown action")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise FlowError(f"{where}: must be a mapping with text keys")
    return value


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise FlowError(f"{where}: must be non-empty text")
    return value


def _opt_str(value: Any, where: str) -> str | None:
    return None if value is None else _str(value, where)


def _slot(name: str, raw: Any, where: str) -> SlotSpec:
    data = _mapping(raw, where)
    kind = _str(data.get("type"), f"{where}.type")
    if kind not in SLOT_TYPES:
        raise FlowError(f"{where}.type: {kind!r} is not one of {sorted(SLOT_TYPES)}")
    choices = data.get("choices", [])
    if not isinstance(choices, list) or not all(isinstance(c, str) and c for c in choices):
        raise FlowError(f"{where}.choices: must be a list of text")
    if kind == "choice" and not choices:
        raise FlowError(f"{where}.choices: a choice slot needs choices")
    max_length = data.get("max_length", 4000)
    if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
        raise FlowError(f"{where}.max_length: must be a positive whole number")
    return SlotSpec(name, kind, tuple(choices), max_length)


_STEP_KEYS = {"say", "ask", "slot", "buttons", "action", "next"}


def _step(name: str, raw: Any, where: str) -> StepSpec:
    data = _mapping(raw, where)
    unknown = set(data) - _STEP_KEYS
    if unknown:
        raise FlowError(f"{where}: unknown keys {sorted(unknown)}")
    buttons_raw = data.get("buttons", [])
    if not isinstance(buttons_raw, list):
        raise FlowError(f"{where}.buttons: must be a list")
    buttons = tuple(
        ButtonSpec(
            id=_str(_mapping(b, f"{where}.buttons[{i}]").get("id"), f"{where}.buttons[{i}].id"),
            label=_str(b.get("label"), f"{where}.buttons[{i}].label"),
            next=_str(b.get("next"), f"{where}.buttons[{i}].next"),
        )
        for i, b in enumerate(buttons_raw)
    )
    step = StepSpec(
        name=name,
        say=_opt_str(data.get("say"), f"{where}.say"),
        ask=_opt_str(data.get("ask"), f"{where}.ask"),
        slot=_opt_str(data.get("slot"), f"{where}.slot"),
        buttons=buttons,
        action=_opt_str(data.get("action"), f"{where}.action"),
        next=_opt_str(data.get("next"), f"{where}.next"),
    )
    if (step.ask is None) != (step.slot is None):
        raise FlowError(f"{where}: `ask` and `slot` go together")
    return step


def _command(command: str, raw: Any, where: str) -> CommandSpec:
    data = _mapping(raw, where)
    restart = data.get("restart", False)
    if not isinstance(restart, bool):
        raise FlowError(f"{where}.restart: must be true or false")
    return CommandSpec(command, _opt_str(data.get("action"), f"{where}.action"), restart)
