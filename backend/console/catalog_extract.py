"""Extracting the console's messages (templates, Python, page scripts, and the errors raised
elsewhere in `backend/` that reach the console, marked with `N_`: `backend/core/errors.py`)
and merging them into
the `.po` catalogs: `python -m backend.console.catalog_extract` after changing a visible text,
then translate what it reports. The i18n test extracts the same way and fails on any message
without a Korean translation.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from babel.messages.catalog import Catalog
from babel.messages.extract import extract, extract_javascript, extract_python
from babel.messages.pofile import read_po, write_po
from jinja2.ext import babel_extract

from backend.console.i18n import DOMAIN, LANGUAGES

CONSOLE = Path(__file__).resolve().parent
BACKEND = CONSOLE.parent
# Outside the console, where an error a counselor reads is raised (its text marked `N_`).
ERROR_SOURCES = (BACKEND, BACKEND / "core", BACKEND / "flows")
LOCALES = CONSOLE / "locales"
KEYWORDS = {"_": None, "gettext": None, "ngettext": (1, 2), "N_": None}
_JINJA_OPTIONS = {"extensions": "jinja2.ext.i18n", "newstyle_gettext": "true"}

Extractor = Callable[..., Iterator[Any]]


def _sources() -> Iterator[tuple[Path, Extractor, dict[str, str]]]:
    for path in sorted((CONSOLE / "templates").glob("*.html")):
        yield path, babel_extract, _JINJA_OPTIONS
    for path in sorted(CONSOLE.glob("*.py")):
        yield path, extract_python, {}
    for folder in ERROR_SOURCES:
        for path in sorted(folder.glob("*.py")):
            yield path, extract_python, {}
    for path in sorted((CONSOLE / "static").glob("*.js")):
        yield path, extract_javascript, {}


def extracted() -> Catalog:
    """Every message the console shows, with where it is used."""
    catalog = Catalog(domain=DOMAIN, project="hotline", charset="utf-8")
    for path, method, options in _sources():
        with path.open("rb") as source:
            for line, message, comments, context in extract(
                method, source, keywords=KEYWORDS, options=options
            ):
                catalog.add(
                    message,
                    None,
                    [(_where(path), line)],
                    auto_comments=comments,
                    context=context,
                )
    return catalog


def _where(path: Path) -> str:
    """Relative to the console for its own files (as the catalogs always said), else `../x`."""
    if path.is_relative_to(CONSOLE):
        return path.relative_to(CONSOLE).as_posix()
    return "../" + path.relative_to(BACKEND).as_posix()


def po_path(language: str) -> Path:
    return LOCALES / language / "LC_MESSAGES" / f"{DOMAIN}.po"


def read(language: str) -> Catalog:
    with po_path(language).open("rb") as po:
        return read_po(po, locale=language, domain=DOMAIN)


def update() -> dict[str, list[str]]:
    """Merge the extracted messages into every language's catalog; what is untranslated."""
    template = extracted()
    untranslated: dict[str, list[str]] = {}
    for language in LANGUAGES:
        path = po_path(language)
        path.parent.mkdir(parents=True, exist_ok=True)
        catalog = read(language) if path.exists() else Catalog(locale=language, domain=DOMAIN)
        catalog.update(template, no_fuzzy_matching=True)
        catalog.obsolete.clear()
        with path.open("wb") as po:
            write_po(po, catalog, width=100, sort_output=True, omit_header=False)
        if language != "en":
            untranslated[language] = [
                str(m.id) for m in catalog if m.id and (not m.string or m.fuzzy)
            ]
    return untranslated


def main() -> int:
    missing = update()
    for language, ids in missing.items():
        for message_id in ids:
            print(f"{language}: untranslated: {message_id}")
    return 1 if any(missing.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
