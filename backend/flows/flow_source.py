"""The port the conversation runtime reads flows through.

Two implementations: `registry.FlowRegistry` (a directory on disk: the CLI's checks, the
tests, the benches) and `backend.published_flows.PublishedFlows` (the published versions in
the database, which every worker follows). A conversation is pinned to its bundle's `version`;
`pinned` must find that version again on any worker and after a restart, which only the
database one can do for a version that is no longer current.
"""

from __future__ import annotations

from typing import Protocol

from backend.flows.engine import Bundle


class FlowSource(Protocol):
    def entry(self) -> Bundle:
        """The bundle a new conversation starts on."""
        ...

    async def pinned(self, version: str) -> Bundle | None:
        """The bundle of `version`, or None when it can no longer be had."""
        ...

    async def follow(self) -> bool:
        """Look for a newly published bundle and swap it in; True when one went live."""
        ...
