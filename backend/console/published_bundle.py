"""What the console reads from the published flow bundle: the resource directory referrals are
recorded against, and the live chat's canned responses.

Both follow the same pointer as the bot's conversations (backend/published_flows.py): when an
administrator publishes or rolls back, the holder is changed in place, so a counselor's next
page or request sees the new list without a restart.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web

from backend.console.canned_responses import CannedResponse, parse
from backend.flows.resources import Directory

log = logging.getLogger(__name__)

CANNED_PREFIX = "canned/"


@dataclass
class ConsoleBundle:
    services: Directory
    canned: tuple[CannedResponse, ...]

    def follow(self, files: Mapping[str, str], services: Directory) -> None:
        """Take a newly published bundle's resources and canned responses; a bundle without
        canned responses keeps the ones before (they are the console's, not the victims')."""
        self.services = services
        try:
            canned = canned_of(files)
        except ValueError as exc:
            log.warning("canned responses of the published flows not taken: %s", exc)
            return
        if canned is not None:
            self.canned = canned


bundle_key = web.AppKey("console_bundle", ConsoleBundle)


def canned_of(files: Mapping[str, str]) -> tuple[CannedResponse, ...] | None:
    """The canned responses of a bundle's files; None when it has none. ValueError names the
    file of a broken one."""
    texts = {
        path.removeprefix(CANNED_PREFIX).removesuffix(".yaml"): text
        for path, text in files.items()
        if path.startswith(CANNED_PREFIX)
    }
    return parse(texts) if texts else None
