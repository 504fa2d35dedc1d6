"""The console's languages: Korean by default, English on request, one gettext catalog for
templates, Python messages and the pages' JavaScript.

The catalogs are the `.po` files under `locales/`, compiled in memory at import (so a committed
`.po` can never drift from a stale `.mo`). The language of a request is set by `access.guard`
(every console route passes it) from the counselor's remembered choice, or the centre's
default; `gettext` reads it from a context variable, so templates and handlers need no
request to translate.
"""

from __future__ import annotations

import gettext as gettext_module
import io
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from importlib import resources
from typing import Final

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from backend.core.errors import HotlineError, Phrase

DOMAIN: Final = "console"
LANGUAGES: Final = ("ko", "en")
DEFAULT_LANGUAGE: Final = "ko"
# Each language named in itself, for the switcher: a counselor who cannot read the current
# language still finds their own.
LANGUAGE_NAMES: Final = {"ko": "한국어", "en": "English"}
COOKIE_NAME: Final = "hotline_console_lang"


def _po_path(language: str) -> resources.abc.Traversable:
    return (
        resources.files("backend.console") / "locales" / language / "LC_MESSAGES" / f"{DOMAIN}.po"
    )


def _load(language: str) -> tuple[gettext_module.GNUTranslations, dict[str, str]]:
    """The compiled catalog, and the messages the pages' scripts use (those extracted from a
    `.js` file), translated."""
    with _po_path(language).open("rb") as po:
        catalog = read_po(po, locale=language, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    scripts: dict[str, str] = {}
    for message in catalog:
        if not message.id or not isinstance(message.id, str):
            continue
        if any(path.endswith(".js") for path, _line in message.locations):
            text = message.string if isinstance(message.string, str) else ""
            scripts[message.id] = text if text and not message.fuzzy else message.id
    return gettext_module.GNUTranslations(compiled), scripts


_CATALOGS = {language: _load(language) for language in LANGUAGES}
_current: ContextVar[str] = ContextVar("console_language", default=DEFAULT_LANGUAGE)
# The page being answered, so the language switcher can return to it.
_page: ContextVar[str] = ContextVar("console_page", default="/console")


def chosen(value: str | None, default: str = DEFAULT_LANGUAGE) -> str:
    """A supported language from a cookie's value, or `default`."""
    return value if value in LANGUAGES else default


def current() -> str:
    return _current.get()


@contextmanager
def speaking(language: str, page: str = "/console") -> Iterator[None]:
    """Translate into `language` within the block (one request's handler, on `page`)."""
    token = _current.set(chosen(language))
    page_token = _page.set(page)
    try:
        yield
    finally:
        _page.reset(page_token)
        _current.reset(token)


def current_page() -> str:
    return _page.get()


def gettext(message: str) -> str:
    return _CATALOGS[_current.get()][0].gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return _CATALOGS[_current.get()][0].ngettext(singular, plural, n)


def script_messages() -> dict[str, str]:
    """The current language's messages for the pages' scripts (`_()` in static/*.js)."""
    return _CATALOGS[_current.get()][1]


def error_text(error: HotlineError) -> str:
    """An error raised outside the console, in the current language: its marked text through
    the catalog, with its values filled in after (`backend/core/errors.py`). An unmarked one
    reads as it was raised."""
    if error.message_id is None:
        return str(error)
    translated = gettext(error.message_id)
    if error.values:
        values = {k: gettext(v) if isinstance(v, Phrase) else v for k, v in error.values.items()}
        translated = translated % values
    return translated if error.where is None else f"{error.where}: {translated}"


def N_(message: str) -> str:
    """Marks a constant for the catalog; it is translated where it is shown (`gettext`)."""
    return message


_ = gettext
