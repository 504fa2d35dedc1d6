"""Flow tests as dialog tables, in YAML next to the flows (`flows/tests/*.test.yaml`).

```yaml
schema: 1
tests:
  - name: a whole report in English
    language: en          # the door's language hint (default ko)
    open: true            # whether counselors answer now (ctx.open)
    channel: web          # optional: played as this channel (its labels; ctx.files). Unset:
                          # a channel that takes files, and every door plays the table
    receipt_known: true   # optional: whether receipt codes typed are the centre's (a door
                          # looks them up; here the table says). Unset: none is known
    dialog:
      - bot: [safety.welcome, report.consent]       # what the start said, by text key
      - click: agree                                 # or `say: text`, or `files: 2`
        bot: [report.category]
        slots: {category: deepfake}                  # these slots are set (others may be too)
        effects: [SubmitReport]                      # exactly these effects, in order
        state: details                               # optional: where the conversation waits
        ended: true                                  # optional
        flags: [minor]                               # optional: exactly these flags
      - after_s: 4000                                # the victim was silent this long
        say: hello
```
Steps are compared by text key, not wording, so a translation never breaks a test. Every run
records the transitions it took; the coverage report counts them against each flow's graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backend.core.conversation import Attachment, Inbound, Pseudonym, Session, StepResult
from backend.core.errors import N_, FlowError
from backend.flows import engine, source
from backend.flows.channels import FILE_CHANNELS
from backend.flows.engine import Bundle, Context
from backend.flows.spec import END

TEST_GLOB = "*.test.yaml"
_ROW_KEYS = frozenset(
    {"say", "click", "files", "bot", "slots", "effects", "state", "ended", "flags", "after_s"}
)
_TEST_KEYS = frozenset({"name", "language", "open", "channel", "receipt_known", "dialog"})
_WHO = Pseudonym("flow-test")


@dataclass
class Coverage:
    """Per flow: the transitions (from, to) of its graph, and those a test run took."""

    edges: dict[str, set[tuple[str, str]]]
    steps: dict[str, set[str]]
    seen_edges: dict[str, set[tuple[str, str]]] = field(default_factory=dict)
    seen_steps: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, bundle: Bundle) -> Coverage:
        edges = {
            name: {(s.name, t) for s in flow.spec.steps.values() for t in s.targets()}
            for name, flow in bundle.flows.items()
        }
        steps = {name: set(flow.spec.steps) for name, flow in bundle.flows.items()}
        return cls(edges, steps)

    def record(self, result: StepResult) -> None:
        for flow, origin, target in result.trace:
            self.seen_edges.setdefault(flow, set()).add((origin, target))
            for name in (origin, target):
                if name != END:
                    self.seen_steps.setdefault(flow, set()).add(name)
        if result.session.state != END:
            self.seen_steps.setdefault(result.session.flow, set()).add(result.session.state)

    def transitions(self, flow: str) -> float:
        total = self.edges.get(flow, set())
        if not total:
            return 100.0
        return 100.0 * len(total & self.seen_edges.get(flow, set())) / len(total)

    def states(self, flow: str) -> float:
        total = self.steps.get(flow, set())
        if not total:
            return 100.0
        return 100.0 * len(total & self.seen_steps.get(flow, set())) / len(total)

    def missing(self, flow: str) -> list[tuple[str, str]]:
        return sorted(self.edges.get(flow, set()) - self.seen_edges.get(flow, set()))


@dataclass(frozen=True)
class Failure:
    """A dialog table's row that did not hold: `message` in English, and its text marked for
    the console's catalog with its values (`text`)."""

    source: str
    test: str
    row: int
    message: str
    message_id: str | None = field(default=None, compare=False)
    values: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __str__(self) -> str:
        return self.text()

    def text(self, translate: Callable[[str], str] = str) -> str:
        """The line through `translate` (the console's gettext); values as they are."""
        problem = self.message
        if self.message_id is not None:
            problem = translate(self.message_id) % self.values
        line = translate(N_("%(source)s: %(test)r row %(row)s: %(problem)s"))
        return line % {
            "source": self.source,
            "test": self.test,
            "row": self.row,
            "problem": problem,
        }


@dataclass
class Report:
    passed: int = 0
    failures: list[Failure] = field(default_factory=list)


def run_directory(bundle: Bundle, directory: Path) -> tuple[Report, Coverage]:
    report, coverage = Report(), Coverage.of(bundle)
    files = sorted((directory / "tests").glob(TEST_GLOB))
    if not files:
        raise FlowError(N_("no %(files)s files"), where=str(directory / "tests"), files=TEST_GLOB)
    for path in files:
        doc = source.read(path)
        if not isinstance(doc.data, dict) or doc.data.get("schema") != 1:
            raise FlowError(N_("a test file starts with `schema: 1` and `tests:`"), where=str(path))
        tests = doc.data.get("tests")
        if not isinstance(tests, list):
            raise FlowError(N_("`tests` must be a list"), where=str(path))
        for index, test in enumerate(tests):
            failure = run_test(bundle, test, f"{path}:{doc.line(('tests', index))}", coverage)
            if failure is None:
                report.passed += 1
            else:
                report.failures.append(failure)
    return report, coverage


def run_test(bundle: Bundle, test: Any, where: str, coverage: Coverage) -> Failure | None:
    if not isinstance(test, dict) or set(test) - _TEST_KEYS or "dialog" not in test:
        raise FlowError(
            N_("a test has %(keys)s, with `dialog`"), where=where, keys=sorted(_TEST_KEYS)
        )
    name = str(test.get("name", "unnamed"))
    rows = test["dialog"]
    if not isinstance(rows, list) or not rows:
        raise FlowError(N_("`dialog` must be a non-empty list"), where=where)
    open_now = bool(test.get("open", True))
    channel = str(test.get("channel", "test"))
    files = "channel" not in test or channel in FILE_CHANNELS
    receipt_known = bool(test.get("receipt_known", False))
    now_s = 1_700_000_000
    language = str(test.get("language", "ko"))
    session: Session | None = None
    for number, row in enumerate(rows, start=1):
        if not isinstance(row, dict) or set(row) - _ROW_KEYS:
            raise FlowError(
                N_("row %(row)s takes only %(keys)s"),
                where=where,
                row=number,
                keys=sorted(_ROW_KEYS),
            )
        now_s += int(row.get("after_s", 5))
        ctx = Context(now_s, open_now, files=files)
        if session is None:
            session = bundle.new_session(Inbound(_WHO, channel, language=language), "flow-test")
            result = engine.start(bundle, session, ctx, _inbound(row, language))
        else:
            inbound = _inbound(row, None)
            if inbound is None:
                raise FlowError(
                    N_("row %(row)s needs `say`, `click` or `files`"), where=where, row=number
                )
            if inbound.text and engine.waits_for_receipt(bundle, session):
                ctx = Context(now_s, open_now, files=files, receipt_known=receipt_known)
            result = engine.step(bundle, session, inbound, ctx)
        coverage.record(result)
        problem = _check(row, result)
        if problem is not None:
            message_id, values = problem
            return Failure(where, name, number, message_id % values, message_id, values)
        session = result.session
    return None


def _inbound(row: Mapping[str, Any], language: str | None) -> Inbound | None:
    if "say" in row:
        return Inbound(_WHO, "test", text=str(row["say"]), language=language)
    if "click" in row:
        return Inbound(_WHO, "test", button=str(row["click"]), language=language)
    if "files" in row:
        count = int(row["files"])
        files = tuple(Attachment("photo", 1000, f"{i:064x}") for i in range(count))
        return Inbound(_WHO, "test", attachments=files, language=language)
    return None


def _check(  # noqa: PLR0911 - one per column
    row: Mapping[str, Any], result: StepResult
) -> tuple[str, dict[str, Any]] | None:
    """What a row's columns expected and the step did otherwise: a marked text and its values."""
    said = [m.key for m in result.messages]
    if "bot" in row and said != list(row["bot"]):
        return N_("bot said %(said)s, expected %(expected)s"), {
            "said": said,
            "expected": row["bot"],
        }
    effects = [type(e).__name__ for e in result.effects]
    if "effects" in row and effects != list(row["effects"]):
        return N_("effects %(effects)s, expected %(expected)s"), {
            "effects": effects,
            "expected": row["effects"],
        }
    for slot, value in dict(row.get("slots", {})).items():
        if result.session.slots.get(slot) != value:
            return N_("slot %(slot)s is %(value)r, expected %(expected)r"), {
                "slot": slot,
                "value": result.session.slots.get(slot),
                "expected": value,
            }
    if "state" in row and result.session.state != row["state"]:
        return N_("waits at %(state)r, expected %(expected)r"), {
            "state": result.session.state,
            "expected": row["state"],
        }
    if "flags" in row and result.session.flags != list(row["flags"]):
        return N_("flags are %(flags)s, expected %(expected)s"), {
            "flags": result.session.flags,
            "expected": row["flags"],
        }
    if "ended" in row and result.session.ended != row["ended"]:
        return N_("ended is %(ended)s, expected %(expected)s"), {
            "ended": result.session.ended,
            "expected": row["ended"],
        }
    return None
