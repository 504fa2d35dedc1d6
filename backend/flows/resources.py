"""The resource directory of `flows/resources.yaml`: services a victim can turn to.

Built on the team's researched list, with its `verified` flags kept. Victims are shown only
verified entries; an unverified one stays in the file, and `hotline flows check` lists it for an
administrator to confirm. Entries are filtered by need (the report category), by age (minors get
the services that serve them) and ordered by the victim's language.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from backend.core.errors import N_, FlowError
from backend.flows import source

ALL = "all"
AGES = frozenset({"minor", "adult", ALL})
MAX_SHOWN = 5
_KEYS = frozenset(
    {"id", "name", "phone", "url", "hours", "needs", "ages", "languages", "verified", "source"}
)


@dataclass(frozen=True)
class Resource:
    id: str
    name: dict[str, str]
    phone: tuple[str, ...]
    url: str | None
    hours: str | None
    needs: frozenset[str]
    ages: frozenset[str]
    languages: tuple[str, ...]
    verified: bool
    line: int = 0

    def line_for(self, language: str) -> str:
        name = self.name.get(language) or self.name.get("en") or next(iter(self.name.values()))
        reach = ", ".join([*self.phone, *([self.url] if self.url else [])])
        hours = f" ({self.hours})" if self.hours else ""
        return f"• {name}: {reach}{hours}"


@dataclass(frozen=True)
class Directory:
    resources: tuple[Resource, ...] = ()
    source: str = ""

    @classmethod
    def load(cls, path: Path) -> Directory:
        if not path.exists():
            return cls()
        doc = source.read(path)
        data = doc.data
        if not isinstance(data, dict) or set(data) != {"schema", "resources"}:
            raise FlowError(N_("needs exactly `schema: 1` and `resources:`"), where=str(path))
        if data["schema"] != 1 or not isinstance(data["resources"], list):
            raise FlowError(N_("`schema` must be 1 and `resources` a list"), where=str(path))
        items = tuple(_resource(raw, doc, i) for i, raw in enumerate(data["resources"]))
        ids = [r.id for r in items]
        if len(set(ids)) != len(ids):
            raise FlowError(N_("resource ids must be unique"), where=str(path))
        return cls(items, str(path))

    def select(self, need: str, minor: bool, language: str) -> list[Resource]:
        """Verified services for this need and age, the victim's language first."""
        age = "minor" if minor else "adult"
        fitting = [
            r
            for r in self.resources
            if r.verified
            and (need in r.needs or ALL in r.needs)
            and (age in r.ages or ALL in r.ages)
        ]
        fitting.sort(key=lambda r: language not in r.languages)
        return fitting[:MAX_SHOWN]

    def unverified(self) -> list[Resource]:
        return [r for r in self.resources if not r.verified]


def _resource(raw: object, doc: source.Document, index: int) -> Resource:
    where = f"{doc.source}:{doc.line(('resources', index))}"
    if not isinstance(raw, dict) or set(raw) - _KEYS:
        raise FlowError(N_("a resource is a mapping of %(keys)s"), where=where, keys=sorted(_KEYS))
    rid, name, verified = raw.get("id"), raw.get("name"), raw.get("verified")
    if not isinstance(rid, str) or not rid:
        raise FlowError(N_("`id` must be text"), where=where)
    if not isinstance(name, dict) or not name or not all(isinstance(v, str) for v in name.values()):
        raise FlowError(N_("`name` maps languages to text"), where=where)
    if not isinstance(verified, bool):
        raise FlowError(N_("`verified` must be true or false"), where=where)
    lists = {}
    for key in ("phone", "needs", "ages", "languages"):
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise FlowError(N_("`%(key)s` must be a list of text"), where=where, key=key)
        lists[key] = value
    if not lists["needs"] or not set(lists["ages"]) <= AGES or not lists["ages"]:
        raise FlowError(
            N_("`needs` and `ages` (%(ages)s) must not be empty"), where=where, ages=sorted(AGES)
        )
    for key in ("url", "hours", "source"):
        if raw.get(key) is not None and not isinstance(raw.get(key), str):
            raise FlowError(N_("`%(key)s` must be text"), where=where, key=key)
    return Resource(
        rid,
        dict(name),
        tuple(lists["phone"]),
        raw.get("url"),
        raw.get("hours"),
        frozenset(lists["needs"]),
        frozenset(lists["ages"]),
        tuple(lists["languages"]),
        verified,
        doc.line(("resources", index)),
    )
