"""Risk triage: rules in `flows/triage.yaml` that read every text a victim sends.

A rule that matches sets a flag on the conversation (which flows branch on, e.g. `'minor' in
flags`), raises its priority, says its safety guidance before anything else, and may ask for a
counselor at once. Patterns are plain keywords (case-folded; Korean also compared without
spaces), never administrator-written regular expressions, which could be made to backtrack
for seconds. A minor's age is read by fixed patterns (`15살`, `15岁`, `15歳`, `15 tuổi`, `I'm 15`,
`15 years old`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from backend.core.errors import N_, FlowError
from backend.flows import source

_AGE = (
    re.compile(r"(?<!\d)(\d{1,2})\s*(?:살|세|岁|歲|歳|tuổi)"),
    re.compile(r"\b(?:i am|i'm|im)\s+(\d{1,2})\b"),
    re.compile(r"(?<!\d)(\d{1,2})\s*(?:years? old|y/?o)\b"),
)
_MIN_PLAUSIBLE_AGE = 5
_RULE_KEYS = frozenset({"id", "flag", "priority", "say", "handoff", "keywords", "age_below"})


@dataclass(frozen=True)
class Rule:
    id: str
    flag: str
    priority: int
    say: str | None
    handoff: bool
    keywords: tuple[str, ...]  # normalised, every language together
    age_below: int | None
    line: int = 0
    # The languages that list keywords for this rule (the linter's F013 wants every locale's).
    languages: frozenset[str] = frozenset()

    def matches(self, folded: str, squeezed: str) -> bool:
        if any(k in folded or k.replace(" ", "") in squeezed for k in self.keywords):
            return True
        if self.age_below is not None:
            for pattern in _AGE:
                for found in pattern.finditer(folded):
                    if _MIN_PLAUSIBLE_AGE <= int(found.group(1)) < self.age_below:
                        return True
        return False


@dataclass(frozen=True)
class Triage:
    rules: tuple[Rule, ...] = ()
    source: str = ""

    @classmethod
    def load(cls, path: Path) -> Triage:
        if not path.exists():
            return cls()
        doc = source.read(path)
        data = doc.data
        if not isinstance(data, dict) or set(data) != {"schema", "rules"}:
            raise FlowError(N_("needs exactly `schema: 1` and `rules:`"), where=str(path))
        if data["schema"] != 1 or not isinstance(data["rules"], list):
            raise FlowError(N_("`schema` must be 1 and `rules` a list"), where=str(path))
        rules = tuple(_rule(raw, doc, i) for i, raw in enumerate(data["rules"]))
        return cls(rules, str(path))

    def scan(self, text: str) -> list[Rule]:
        """The rules this text matches, in file order."""
        if not self.rules or not text:
            return []
        folded = " ".join(text.casefold().split())
        squeezed = folded.replace(" ", "")
        return [rule for rule in self.rules if rule.matches(folded, squeezed)]


def _rule(raw: object, doc: source.Document, index: int) -> Rule:
    line = doc.line(("rules", index))
    where = f"{doc.source}:{line}"
    if not isinstance(raw, dict) or set(raw) - _RULE_KEYS:
        raise FlowError(N_("a rule is a mapping of %(keys)s"), where=where, keys=sorted(_RULE_KEYS))
    rule_id, flag, say = raw.get("id"), raw.get("flag"), raw.get("say")
    priority, handoff = raw.get("priority", 0), raw.get("handoff", False)
    keywords: Mapping[str, object] = raw.get("keywords", {})
    age_below = raw.get("age_below")
    if not isinstance(rule_id, str) or not isinstance(flag, str) or not flag:
        raise FlowError(N_("`id` and `flag` must be text"), where=where)
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 3:
        raise FlowError(N_("`priority` must be 0 to 3"), where=where)
    if say is not None and not isinstance(say, str):
        raise FlowError(N_("`say` must be a text key"), where=where)
    if not isinstance(handoff, bool):
        raise FlowError(N_("`handoff` must be true or false"), where=where)
    if age_below is not None and (not isinstance(age_below, int) or not 6 <= age_below <= 30):
        raise FlowError(N_("`age_below` must be an age"), where=where)
    if not isinstance(keywords, dict):
        raise FlowError(N_("`keywords` maps a language to a list of words"), where=where)
    words: list[str] = []
    for language, listed in keywords.items():
        if not isinstance(listed, list) or not all(isinstance(w, str) and w for w in listed):
            raise FlowError(
                N_("keywords.%(language)s must be a list of text"), where=where, language=language
            )
        words += [" ".join(w.casefold().split()) for w in listed]
    if not words and age_below is None:
        raise FlowError(N_("a rule needs keywords or `age_below`"), where=where)
    languages = frozenset(str(language) for language, listed in keywords.items() if listed)
    return Rule(rule_id, flag, priority, say, handoff, tuple(words), age_below, line, languages)
