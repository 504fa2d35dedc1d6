"""The flow linter: every problem of a flows directory at once, each with a code, file and line.

Codes (a test in tests/test_flow_lint.py breaks each rule on purpose):
- F000 the file cannot be read or parsed (YAML, shape, types)
- F001 a target step does not exist
- F002 a step cannot be reached from the start
- F003 a step from which no path reaches the end
- F004 an `if` branch list without an `else`
- F005 a text key missing in a language (ko and en complete; `safety.*` in every locale)
- F006 an unknown action, or an argument an action does not take
- F007 a slot used but not declared
- F008 a button or choice id over the platforms' limit (Telegram: 64 bytes of callback data)
- F009 a cycle of steps none of which waits for input
- F010 a call to a flow that does not exist, or the entry flow missing
- F011 a translation whose `{placeholders}` differ from the fallback language's text (a missing
  `{reply_how}` in `safety.handoff` leaves a victim untold how replies reach her)
- F012 a button label longer than a channel shows (KakaoTalk's quick replies: 14 characters),
  in the wording that channel gets: give it a short one under `labels.<channel>.<key>`
- F013 a triage rule without keywords in a language the locales speak (a victim writing in it
  would not be read)
- W100 (warning) a resource not yet verified: an administrator should confirm it
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from backend.core.errors import N_, FlowError
from backend.flows.channels import BUTTON_LABEL_LIMITS, channel_key
from backend.flows.resources import Directory
from backend.flows.spec import ACTIONS, AGE_BANDS, END, FlowSpec, StepSpec
from backend.flows.texts import SAFETY_PREFIX, Texts, placeholders
from backend.flows.triage import Triage

MAX_BUTTON_ID_BYTES = 64
BUTTON_ID = re.compile(r"^[A-Za-z0-9_:.-]+$")  # what every door accepts (see bot/webchat.py)
# Keys the engine itself (or the runtime: a handoff while nobody is on shift) says, so they
# must exist too.
ENGINE_KEYS = (
    "common.stale_button",
    "common.use_buttons",
    "common.no_files",
    "common.too_long",
    "common.empty",
    "common.number",
    "common.url",
    "common.files_or_done",
    "common.file_received",
    "common.retry_help",
    "common.unavailable",
    "common.blocked",
    "resources.none",
    # Who will read a report just sent, filled into its `{who_reads}` (bot/runtime.py).
    "report.read_on_shift",
    "report.read_no_shift",
    "safety.exit",
    "safety.no_images_minor",
    # What the bot says in a live chat with a counselor (bot/live.py, bot/relay.py).
    "live.joined",
    "live.how_push",
    "live.how_web",
    "live.how_kakao",
    "live.how_exit",
    "live.counselor",
    "live.ended",
    "live.check",
    "live.no_replies",
    "live.sent",
    "live.in_chat",
    "live.text_only",
    "live.saved",
    "live.waiting_reply",
    "safety.no_counselor",
    # Said to a sender over an inbound limit (bot/inbound_limits.py, bot/runtime.py).
    "safety.slow_down",
)
_LOCATED = re.compile(r"^(?P<source>[^:\n]+?):(?P<line>\d+): (?P<message>.*)$", re.DOTALL)


@dataclass(frozen=True)
class Problem:
    """One finding. `message` is the English (the CLI's); a marked one also keeps its catalog
    text (`N_`) and values, so the console says it in the counselor's language (`text`)."""

    code: str
    source: str
    line: int
    message: str
    message_id: str | None = field(default=None, compare=False)
    values: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_error(self) -> bool:
        return self.code.startswith("F")

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.code} {self.message}"

    @classmethod
    def of(
        cls, code: str, source: str, line: int, message_id: str, where: str = "", **values: Any
    ) -> Problem:
        """A finding from its marked text and values; `where` (a flow's name) goes before it
        as it is."""
        english = message_id % values if values else message_id
        message = f"{where}: {english}" if where else english
        return cls(code, source, line, message, message_id, values)

    def text(self, translate: Callable[[str], str]) -> str:
        """The message through `translate` (a catalog's gettext), its values and the place
        before it as they are; the English when it was not marked."""
        if self.message_id is None:
            return self.message
        english = self.message_id % self.values if self.values else self.message_id
        if not self.message.endswith(english):
            return self.message
        translated = translate(self.message_id)
        if self.values:
            translated = translated % self.values
        return self.message[: len(self.message) - len(english)] + translated

    @classmethod
    def from_error(cls, exc: FlowError, fallback_source: str) -> Problem:
        # Marked when raised with its place apart (`where=`), so only the text is translated.
        message_id = exc.message_id if exc.where is not None else None
        found = _LOCATED.match(str(exc))
        if found is None:
            return cls("F000", fallback_source, 1, str(exc), message_id, exc.values)
        source, line = found["source"], int(found["line"])
        return cls("F000", source, line, found["message"], message_id, exc.values)


def lint(
    flows: Mapping[str, FlowSpec],
    texts: Texts,
    entry: str,
    triage: Triage | None = None,
    directory: Directory | None = None,
) -> list[Problem]:
    problems: list[Problem] = []
    if entry not in flows:
        problems.append(
            Problem.of("F010", "flows", 1, N_("the entry flow %(entry)r is missing"), entry=entry)
        )
    used_keys: dict[str, tuple[str, int]] = {key: ("engine", 1) for key in ENGINE_KEYS}
    label_keys: dict[str, tuple[str, int]] = {}
    for flow in flows.values():
        problems += _lint_flow(flow, flows, used_keys)
        for step in flow.steps.values():
            for key in _labels_used(step, flow):
                label_keys.setdefault(key, (flow.source, step.line))
    if triage is not None:
        for rule in triage.rules:
            if rule.say is not None:
                used_keys.setdefault(rule.say, (triage.source, rule.line))
            for language in sorted(set(texts.locales) - rule.languages):
                problems.append(
                    Problem.of(
                        "F013",
                        triage.source,
                        rule.line,
                        N_("triage rule %(rule)r has no keywords in %(language)r"),
                        rule=rule.id,
                        language=language,
                    )
                )
    problems += _lint_texts(texts, used_keys)
    problems += _lint_labels(texts, label_keys)
    if directory is not None:
        problems += [
            Problem.of(
                "W100", directory.source, r.line, N_("resource %(id)r is not verified yet"), id=r.id
            )
            for r in directory.unverified()
        ]
    return problems


def _lint_flow(  # noqa: PLR0912 - one pass per step keeps each check next to its line
    flow: FlowSpec, flows: Mapping[str, FlowSpec], used_keys: dict[str, tuple[str, int]]
) -> list[Problem]:
    out: list[Problem] = []
    src = flow.source

    def problem(code: str, line: int, message_id: str, **values: Any) -> None:
        out.append(Problem.of(code, src, line, message_id, where=flow.name, **values))

    names = set(flow.steps) | {END}
    for step in flow.steps.values():
        for target in step.targets():
            if target not in names:
                problem(
                    "F001",
                    step.line,
                    N_("step %(step)r goes to unknown %(target)r"),
                    step=step.name,
                    target=target,
                )
        conditional = [b for b in step.next if b.condition is not None]
        if conditional and step.next[-1].condition is not None:
            problem(
                "F004",
                step.next[-1].line,
                N_("step %(step)r has `if` without `else`"),
                step=step.name,
            )
        if step.action is not None:
            if step.action not in ACTIONS:
                problem(
                    "F006",
                    step.line,
                    N_("step %(step)r: unknown action %(action)r"),
                    step=step.name,
                    action=step.action,
                )
            else:
                for arg in set(step.args) - ACTIONS[step.action]:
                    problem(
                        "F006",
                        step.line,
                        N_("%(action)s takes no argument %(argument)r"),
                        action=step.action,
                        argument=arg,
                    )
        elif step.args:
            problem("F006", step.line, N_("step %(step)r has `with` but no action"), step=step.name)
        if step.call is not None and step.call not in flows:
            problem(
                "F010",
                step.line,
                N_("step %(step)r calls unknown flow %(flow)r"),
                step=step.name,
                flow=step.call,
            )
        for slot in _slots_used(step):
            if slot not in flow.slots:
                problem(
                    "F007",
                    step.line,
                    N_("step %(step)r uses undeclared slot %(slot)r"),
                    step=step.name,
                    slot=slot,
                )
        ids = [b.id for b in step.buttons]
        slot_spec = flow.slots.get(step.slot) if step.slot else None
        if slot_spec is not None and slot_spec.type in ("choice", "age_band"):
            ids += list(slot_spec.choices)
        for button_id in ids:
            if len(button_id.encode()) > MAX_BUTTON_ID_BYTES or not BUTTON_ID.match(button_id):
                problem(
                    "F008",
                    step.line,
                    N_(
                        "button id %(id)r... is over %(limit)s bytes "
                        "or has characters a door refuses"
                    ),
                    id=button_id[:20],
                    limit=MAX_BUTTON_ID_BYTES,
                )
        if len(set(ids)) != len(ids):
            problem(
                "F008", step.line, N_("step %(step)r has the same button id twice"), step=step.name
            )
        for key in _keys_used(step, flow):
            used_keys.setdefault(key, (src, step.line))
    return out + _lint_graph(flow, flows)


def _lint_graph(flow: FlowSpec, flows: Mapping[str, FlowSpec]) -> list[Problem]:
    out: list[Problem] = []

    def problem(code: str, line: int, message_id: str, **values: Any) -> None:
        out.append(Problem.of(code, flow.source, line, message_id, where=flow.name, **values))

    names = set(flow.steps) | {END}
    for command in flow.commands.values():
        if command.action is not None and command.action not in ACTIONS:
            problem(
                "F006",
                command.line,
                N_("command %(command)s: unknown action"),
                command=command.command,
            )
        if command.call is not None and command.call not in flows:
            problem(
                "F010",
                command.line,
                N_("command %(command)s calls unknown flow"),
                command=command.command,
            )
    if flow.idle is not None and flow.idle.next not in names:
        problem(
            "F001", flow.idle.line, N_("idle goes to unknown %(target)r"), target=flow.idle.next
        )
    edges = {step.name: [t for t in step.targets() if t in names] for step in flow.steps.values()}
    roots = [flow.start] + ([flow.idle.next] if flow.idle and flow.idle.next in names else [])
    reachable = _reach(roots, edges)
    for step in flow.steps.values():
        if step.name not in reachable:
            problem("F002", step.line, N_("step %(step)r cannot be reached"), step=step.name)
    # An unknown target counts as an end here: it is F001 already, not also F003.
    reverse: dict[str, list[str]] = {name: [] for name in names}
    for step in flow.steps.values():
        for target in step.targets():
            reverse[target if target in names else END].append(step.name)
    ending = _reach([END], reverse)
    for step in flow.steps.values():
        if step.name not in ending:
            problem("F003", step.line, N_("no path from step %(step)r ever ends"), step=step.name)
    auto = {
        name: [t for t in targets if t in flow.steps and not _waits(flow.steps[t], flows)]
        for name, targets in edges.items()
        if not _waits(flow.steps[name], flows)
    }
    for name in auto:
        if name in _reach(auto.get(name, []), auto):
            problem(
                "F009",
                flow.steps[name].line,
                N_("step %(step)r is on a cycle with no input"),
                step=name,
            )
    return out


def _waits(step: StepSpec, flows: Mapping[str, FlowSpec]) -> bool:
    if step.waits:
        return True
    called = flows.get(step.call) if step.call else None
    return called is not None and any(s.waits for s in called.steps.values())


def _reach(roots: Iterable[str], edges: Mapping[str, list[str]]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += edges.get(name, [])
    return seen


def _slots_used(step: StepSpec) -> set[str]:
    used = {step.slot} if step.slot else set()
    for branch in step.next:
        if branch.condition is not None:
            used |= branch.condition.slots
    if step.action == "record_feedback":
        used.add(str(step.args.get("slot", "feedback")))
    if step.action == "case_request":
        used.add("code")
        if step.args.get("kind") == "add_info":
            used.add("addition")
    return used


def _keys_used(step: StepSpec, flow: FlowSpec) -> list[str]:
    keys = [k for k in (step.say, step.ask, step.retry.say) if k]
    return keys + _labels_used(step, flow)


def _labels_used(step: StepSpec, flow: FlowSpec) -> list[str]:
    """The text keys a step shows as button labels."""
    keys = [b.label for b in step.buttons]
    slot = flow.slots.get(step.slot) if step.slot else None
    if slot is not None and slot.type == "choice":
        keys += [f"{slot.name}.{c}" for c in slot.choices]
    if slot is not None and slot.type == "age_band":
        keys += [f"age_band.{band}" for band in AGE_BANDS]
    return keys


def _lint_labels(texts: Texts, used: Mapping[str, tuple[str, int]]) -> list[Problem]:
    """F012: every label fits every channel, as that channel gets it. A language is checked
    where it has its own wording; one that falls back is checked in the language it falls to."""
    out: list[Problem] = []
    for key, (_flow_source, line) in sorted(used.items()):
        for channel, limit in BUTTON_LABEL_LIMITS.items():
            short = channel_key(key, channel)
            for locale in texts.locales.values():
                if short not in locale.texts and key not in locale.texts:
                    continue
                label = texts.label(key, locale.language, channel)
                if len(label) <= limit:
                    continue
                where = locale.lines.get(short, locale.lines.get(key, line))
                out.append(
                    Problem.of(
                        "F012",
                        locale.source,
                        where,
                        N_(
                            "label %(key)r is %(length)s characters, over %(channel)s's "
                            "%(limit)s: add a shorter one as %(short)r"
                        ),
                        key=key,
                        length=len(label),
                        channel=channel,
                        limit=limit,
                        short=short,
                    )
                )
    return out


def _lint_texts(texts: Texts, used: Mapping[str, tuple[str, int]]) -> list[Problem]:
    out: list[Problem] = []
    safety = {k for locale in texts.locales.values() for k in locale.texts if _is_safety(k)}
    for key, (src, line) in sorted(used.items()):
        for locale in texts.locales.values():
            if key in locale.texts:
                continue
            if locale.complete or _is_safety(key):
                out.append(
                    Problem.of(
                        "F005",
                        src,
                        line,
                        N_("text %(key)r is missing in %(language)r"),
                        key=key,
                        language=locale.language,
                    )
                )
    reference = texts.locales[texts.fallback].texts
    for locale in texts.locales.values():
        for key, text in sorted(locale.texts.items()):
            expected = reference.get(key)
            if expected is not None and placeholders(text) != placeholders(expected):
                names = ", ".join(sorted(placeholders(expected)))
                out.append(
                    Problem.of(
                        "F011",
                        locale.source,
                        locale.lines.get(key, 1),
                        N_("text %(key)r must use the placeholders of %(fallback)r: %(names)s")
                        if names
                        else N_("text %(key)r must use the placeholders of %(fallback)r: none"),
                        key=key,
                        fallback=texts.fallback,
                        names=names,
                    )
                )
    for key in sorted(safety - set(used)):
        for locale in texts.locales.values():
            if key not in locale.texts:
                out.append(
                    Problem.of(
                        "F005",
                        locale.source,
                        1,
                        N_("safety text %(key)r is missing in this locale"),
                        key=key,
                    )
                )
    return out


def _is_safety(key: str) -> bool:
    return key.startswith(SAFETY_PREFIX)
