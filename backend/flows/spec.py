"""Parsing a flow document into a typed specification.

The parser checks shape and types (unknown keys, wrong types, an `ask` without its slot) and
raises the first `FlowError` it meets, with file and line. What needs the whole flow or the
locales (targets, reachability, text keys, actions, slots) is the linter's job
(`backend.flows.lint`), which reports every problem at once with an error code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from backend.core.errors import N_, FlowError
from backend.flows.expressions import Condition, compile_condition
from backend.flows.source import Document, PathKey

SCHEMA_VERSION = 1
END = "END"
DEFAULT_RETRIES = 3
AGE_BANDS = ("under_14", "14_17", "18_plus", "no_say")
MINOR_AGE_BANDS = frozenset({"under_14", "14_17"})
ADULT_AGE_BAND = "18_plus"
# `receipt`: a receipt code a returning victim types; stored as text, and looked up by the
# runtime as it arrives (`ctx.receipt_known`), so a wrong code is said at once (issue 18).
SLOT_TYPES = frozenset({"choice", "text", "number", "age_band", "url", "files", "receipt"})
# What a files slot keeps of each file: its SHA-256 only ("hashes"), also the PDQ of images so
# platforms' hash lists can find copies ("match", only when the victim chose it), or the bytes
# sealed to the centre key and carried with the report ("sealed": non-intimate screenshots,
# with the victim's consent). Never anything from a minor.
FILES_KEEP = ("hashes", "match", "sealed")
# Each action, and the `with:` arguments it takes.
ACTIONS: Mapping[str, frozenset[str]] = {
    "submit_report": frozenset(),
    "request_handoff": frozenset({"reason"}),
    "quick_exit": frozenset(),
    "show_resources": frozenset({"need"}),
    "issue_receipt": frozenset(),
    "case_request": frozenset({"kind"}),
    "record_feedback": frozenset({"slot"}),
    "raise_priority": frozenset({"level", "reason"}),
}


@dataclass(frozen=True)
class ButtonSpec:
    id: str
    label: str
    next: str
    line: int = 0


@dataclass(frozen=True)
class Branch:
    """One arm of `next:`; `condition` None is the `else` (or a plain `next: step`)."""

    target: str
    condition: Condition | None = None
    line: int = 0


@dataclass(frozen=True)
class SlotSpec:
    name: str
    type: str
    choices: tuple[str, ...] = ()
    max_length: int = 4000
    minimum: int = 0
    maximum: int = 10_000
    max_files: int = 10
    line: int = 0
    keep: str = "hashes"  # files slots: one of FILES_KEEP


@dataclass(frozen=True)
class RetrySpec:
    max: int = DEFAULT_RETRIES
    say: str | None = None
    exhausted: str | None = None


@dataclass(frozen=True)
class StepSpec:
    name: str
    say: str | None = None
    ask: str | None = None
    slot: str | None = None
    buttons: tuple[ButtonSpec, ...] = ()
    action: str | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    call: str | None = None
    next: tuple[Branch, ...] = ()
    retry: RetrySpec = RetrySpec()
    priority: int = 0
    delete_inbound: bool = False
    line: int = 0

    @property
    def waits(self) -> bool:
        """True for a step that waits for the victim's input."""
        return bool(self.buttons) or self.ask is not None

    def targets(self) -> list[str]:
        found = [b.next for b in self.buttons] + [b.target for b in self.next]
        if self.retry.exhausted is not None:
            found.append(self.retry.exhausted)
        return found


@dataclass(frozen=True)
class CommandSpec:
    command: str
    action: str | None = None
    restart: bool = False
    call: str | None = None
    line: int = 0


@dataclass(frozen=True)
class IdleSpec:
    after_s: int
    next: str
    line: int = 0


@dataclass(frozen=True)
class FlowSpec:
    name: str
    start: str
    slots: Mapping[str, SlotSpec]
    steps: Mapping[str, StepSpec]
    commands: Mapping[str, CommandSpec]
    source: str = ""
    idle: IdleSpec | None = None
    line: int = 0


_TOP_KEYS = frozenset({"schema", "flow", "start", "slots", "steps", "commands", "idle"})
_SLOT_KEYS = frozenset({"type", "choices", "max_length", "min", "max", "max_files", "keep"})
_STEP_KEYS = frozenset(
    {
        "say",
        "ask",
        "slot",
        "buttons",
        "action",
        "with",
        "call",
        "next",
        "retry",
        "priority",
        "delete_inbound",
    }
)
_COMMAND_KEYS = frozenset({"action", "restart", "call"})


class _Reader:
    """Type checks with the file and line in every message."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc

    def fail(self, path: PathKey, message: str, **values: Any) -> FlowError:
        """`message` marked with `N_`, its values by name; the file, line and key go before."""
        where = ".".join(str(p) for p in path) or "top level"
        return FlowError(
            message, where=f"{self.doc.source}:{self.doc.line(path)}: {where}", **values
        )

    def mapping(self, value: Any, path: PathKey, keys: frozenset[str] | None) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(path, N_("must be a mapping"))
        if keys is not None and set(value) - keys:
            raise self.fail(path, N_("unknown keys %(keys)s"), keys=sorted(set(value) - keys))
        return value

    def text(self, value: Any, path: PathKey) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(path, N_("must be non-empty text"))
        return value

    def opt_text(self, value: Any, path: PathKey) -> str | None:
        return None if value is None else self.text(value, path)

    def whole(self, value: Any, path: PathKey, low: int, high: int) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise self.fail(
                path, N_("must be a whole number from %(low)s to %(high)s"), low=low, high=high
            )
        return value

    def flag(self, value: Any, path: PathKey) -> bool:
        if not isinstance(value, bool):
            raise self.fail(path, N_("must be true or false"))
        return value

    def line(self, path: PathKey) -> int:
        return self.doc.line(path)


def parse_flow(doc: Document) -> FlowSpec:
    r = _Reader(doc)
    top = r.mapping(doc.data, (), _TOP_KEYS)
    if top.get("schema") != SCHEMA_VERSION:
        raise r.fail(("schema",), N_("must be %(schema)s"), schema=SCHEMA_VERSION)
    name = r.text(top.get("flow"), ("flow",))
    slots = {
        slot: _slot(r, slot, raw, ("slots", slot))
        for slot, raw in r.mapping(top.get("slots", {}), ("slots",), None).items()
    }
    steps_raw = r.mapping(top.get("steps"), ("steps",), None)
    if not steps_raw:
        raise r.fail(("steps",), N_("a flow needs at least one step"))
    steps = {step: _step(r, step, raw, ("steps", step)) for step, raw in steps_raw.items()}
    commands = {
        command: _command(r, command, raw, ("commands", command))
        for command, raw in r.mapping(top.get("commands", {}), ("commands",), None).items()
    }
    idle = None
    if "idle" in top:
        idle_raw = r.mapping(top["idle"], ("idle",), frozenset({"after_s", "next"}))
        idle = IdleSpec(
            r.whole(idle_raw.get("after_s"), ("idle", "after_s"), 60, 30 * 86400),
            r.text(idle_raw.get("next"), ("idle", "next")),
            r.line(("idle",)),
        )
    start = r.text(top.get("start"), ("start",))
    if start not in steps:
        raise r.fail(("start",), N_("start step %(step)r does not exist"), step=start)
    return FlowSpec(name, start, slots, steps, commands, doc.source, idle, r.line(("flow",)))


def _slot(r: _Reader, name: str, raw: Any, path: PathKey) -> SlotSpec:
    data = r.mapping(raw, path, _SLOT_KEYS)
    kind = r.text(data.get("type"), (*path, "type"))
    if kind not in SLOT_TYPES:
        raise r.fail(
            (*path, "type"),
            N_("%(kind)r is not one of %(kinds)s"),
            kind=kind,
            kinds=sorted(SLOT_TYPES),
        )
    choices = data.get("choices", [])
    if not isinstance(choices, list) or not all(isinstance(c, str) and c for c in choices):
        raise r.fail((*path, "choices"), N_("must be a list of text"))
    if kind == "choice" and not choices:
        raise r.fail((*path, "choices"), N_("a choice slot needs choices"))
    if kind == "age_band":
        choices = list(AGE_BANDS)
    keep = r.text(data.get("keep", "hashes"), (*path, "keep"))
    if keep not in FILES_KEEP or (keep != "hashes" and kind != "files"):
        raise r.fail(
            (*path, "keep"), N_("a files slot keeps one of %(keeps)s"), keeps=list(FILES_KEEP)
        )
    return SlotSpec(
        name,
        kind,
        tuple(choices),
        r.whole(data.get("max_length", 4000), (*path, "max_length"), 1, 4000),
        r.whole(data.get("min", 0), (*path, "min"), -(10**9), 10**9),
        r.whole(data.get("max", 10_000), (*path, "max"), -(10**9), 10**9),
        r.whole(data.get("max_files", 10), (*path, "max_files"), 1, 20),
        r.line(path),
        keep,
    )


def _step(r: _Reader, name: str, raw: Any, path: PathKey) -> StepSpec:
    data = r.mapping(raw, path, _STEP_KEYS)
    buttons_raw = data.get("buttons", [])
    if not isinstance(buttons_raw, list):
        raise r.fail((*path, "buttons"), N_("must be a list"))
    buttons = []
    for i, raw_button in enumerate(buttons_raw):
        where = (*path, "buttons", i)
        b = r.mapping(raw_button, where, frozenset({"id", "label", "next"}))
        buttons.append(
            ButtonSpec(
                r.text(b.get("id"), (*where, "id")),
                r.text(b.get("label"), (*where, "label")),
                r.text(b.get("next"), (*where, "next")),
                r.line(where),
            )
        )
    retry = RetrySpec()
    if "retry" in data:
        rr = r.mapping(data["retry"], (*path, "retry"), frozenset({"max", "say", "exhausted"}))
        retry = RetrySpec(
            r.whole(rr.get("max", DEFAULT_RETRIES), (*path, "retry", "max"), 0, 10),
            r.opt_text(rr.get("say"), (*path, "retry", "say")),
            r.opt_text(rr.get("exhausted"), (*path, "retry", "exhausted")),
        )
    args = r.mapping(data.get("with", {}), (*path, "with"), None)
    for key, value in args.items():
        if not isinstance(value, str | int) or isinstance(value, bool):
            raise r.fail((*path, "with", key), N_("must be text or a whole number"))
    step = StepSpec(
        name=name,
        say=r.opt_text(data.get("say"), (*path, "say")),
        ask=r.opt_text(data.get("ask"), (*path, "ask")),
        slot=r.opt_text(data.get("slot"), (*path, "slot")),
        buttons=tuple(buttons),
        action=r.opt_text(data.get("action"), (*path, "action")),
        args=dict(args),
        call=r.opt_text(data.get("call"), (*path, "call")),
        next=_next(r, data.get("next"), (*path, "next")),
        retry=retry,
        priority=r.whole(data.get("priority", 0), (*path, "priority"), 0, 3),
        delete_inbound=r.flag(data.get("delete_inbound", False), (*path, "delete_inbound")),
        line=r.line(path),
    )
    if (step.ask is None) != (step.slot is None):
        raise r.fail(path, N_("`ask` and `slot` go together"))
    if step.say is not None and step.ask is not None:
        raise r.fail(path, N_("a step either says or asks, not both"))
    if step.call is not None and (step.waits or step.action is not None):
        raise r.fail(path, N_("a `call` step only calls and continues with `next`"))
    if not step.buttons and not step.next:
        raise r.fail(path, N_("needs `next` or buttons"))
    return step


def _next(r: _Reader, raw: Any, path: PathKey) -> tuple[Branch, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (Branch(r.text(raw, path), None, r.line(path)),)
    if not isinstance(raw, list) or not raw:
        raise r.fail(path, N_("must be a step name or a list of `if`/`then` and `else` arms"))
    branches = []
    for i, arm_raw in enumerate(raw):
        where = (*path, i)
        arm = r.mapping(arm_raw, where, frozenset({"if", "then", "else"}))
        if "else" in arm:
            if set(arm) != {"else"}:
                raise r.fail(where, N_("an `else` arm has only `else`"))
            branches.append(Branch(r.text(arm["else"], (*where, "else")), None, r.line(where)))
            continue
        if set(arm) != {"if", "then"}:
            raise r.fail(where, N_("an arm needs `if` and `then`"))
        try:
            condition = compile_condition(arm["if"])
        except FlowError as exc:
            raise r.fail((*where, "if"), exc.message_id or str(exc), **exc.values) from None
        branches.append(Branch(r.text(arm["then"], (*where, "then")), condition, r.line(where)))
    return tuple(branches)


def _command(r: _Reader, command: str, raw: Any, path: PathKey) -> CommandSpec:
    data = r.mapping(raw, path, _COMMAND_KEYS)
    if not command.startswith("/") or command != command.lower():
        raise r.fail(path, N_("a command is a lower-case word starting with /"))
    spec = CommandSpec(
        command,
        r.opt_text(data.get("action"), (*path, "action")),
        r.flag(data.get("restart", False), (*path, "restart")),
        r.opt_text(data.get("call"), (*path, "call")),
        r.line(path),
    )
    if sum([spec.action is not None, spec.restart, spec.call is not None]) != 1:
        raise r.fail(path, N_("a command has exactly one of `action`, `restart`, `call`"))
    return spec
