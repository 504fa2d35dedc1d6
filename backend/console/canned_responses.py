"""Canned responses a counselor can pick in the live chat, kept in the repository per language.

`backend/console/canned/<language>.yaml` is a list of `{id, title, text}`, reviewed like code.
Every file has the same ids, so a counselor finds the same answer in the victim's language; the
files are checked when the console starts, so a broken one stops the start, not a chat.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable

import yaml

from backend.core.conversation import MAX_TEXT_CHARS


@dataclass(frozen=True)
class CannedResponse:
    id: str
    language: str
    title: str
    text: str


def shipped() -> Traversable:
    return resources.files("backend.console") / "canned"


def load(directory: Traversable) -> tuple[CannedResponse, ...]:
    """Every language file in `directory`, checked (ValueError naming the file and entry)."""
    texts = {
        path.name.removesuffix(".yaml"): path.read_text(encoding="utf-8")
        for path in directory.iterdir()
        if path.name.endswith(".yaml")
    }
    return parse(texts)


def parse(texts: Mapping[str, str]) -> tuple[CannedResponse, ...]:
    """The canned responses of `{language: YAML text}` (a published flow bundle's `canned/`),
    checked as `load` does."""
    found: list[CannedResponse] = []
    ids_by_language: dict[str, list[str]] = {}
    for language in sorted(texts):
        data = yaml.safe_load(texts[language])
        name = f"{language}.yaml"
        if not isinstance(data, list):
            raise ValueError(f"{name}: expected a list of canned responses")
        for n, item in enumerate(data, 1):
            if not isinstance(item, dict) or not all(
                isinstance(item.get(k), str) and item[k].strip() for k in ("id", "title", "text")
            ):
                raise ValueError(
                    f"{language}.yaml, entry {n}: needs a non-empty id, title and text"
                )
            if len(item["text"]) > MAX_TEXT_CHARS:
                raise ValueError(f"{language}.yaml, {item['id']}: longer than a chat line may be")
            found.append(CannedResponse(item["id"], language, item["title"], item["text"]))
            ids_by_language.setdefault(language, []).append(item["id"])
    id_sets = {lang: sorted(ids) for lang, ids in ids_by_language.items()}
    for lang, ids in id_sets.items():
        if len(set(ids)) != len(ids):
            raise ValueError(f"{lang}.yaml: an id is used twice")
        if ids != next(iter(id_sets.values())):
            raise ValueError(f"{lang}.yaml: the ids differ from the other languages'")
    return tuple(found)


def in_order_for(responses: Sequence[CannedResponse], language: str) -> list[CannedResponse]:
    """The victim's language first, then the others; each language in its file's order."""
    return sorted(responses, key=lambda r: r.language != language)
