"""Loading a flows directory into a versioned bundle, and swapping bundles in atomically.

A bundle is everything one load of the directory produced: the flows, the locales, the triage
rules, the resource directory and the service hours, with a version that digests all their
bytes. A reload builds and lints a whole new bundle first and swaps it in only if it has no
error, so an invalid edit never replaces a valid one. Old bundles stay (up to `KEEP_VERSIONS`),
so a conversation finishes on the version it began with.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

from backend.core.errors import N_, FlowError
from backend.flows import source
from backend.flows.engine import Bundle, CompiledFlow
from backend.flows.hours import ServiceHours
from backend.flows.lint import Problem, lint
from backend.flows.resources import Directory
from backend.flows.spec import FlowSpec, parse_flow
from backend.flows.texts import Texts
from backend.flows.triage import Triage

log = logging.getLogger(__name__)

ENTRY_FLOW = "report"
KEEP_VERSIONS = 32
FLOW_GLOB = "*.flow.yaml"


def flow_files(directory: Path) -> list[Path]:
    """Every file a bundle is made of, in a stable order."""
    files = sorted(directory.glob(FLOW_GLOB)) + sorted((directory / "locales").glob("*.yaml"))
    return files + [
        directory / name
        for name in ("triage.yaml", "resources.yaml", "service.yaml")
        if (directory / name).exists()
    ]


def fingerprint(directory: Path) -> tuple[tuple[str, int, int], ...]:
    """Cheap change detection: names, sizes and modification times."""
    found = []
    for path in flow_files(directory):
        try:
            stat = path.stat()
        except OSError:
            continue
        found.append((path.name, stat.st_size, stat.st_mtime_ns))
    return tuple(found)


def load_bundle(directory: Path, entry: str = ENTRY_FLOW) -> tuple[Bundle | None, list[Problem]]:
    """The bundle of `directory` and every problem found; no bundle when any is an error."""
    problems: list[Problem] = []
    try:
        texts = Texts.load(directory / "locales")
        triage = Triage.load(directory / "triage.yaml")
        resources = Directory.load(directory / "resources.yaml")
        hours = ServiceHours.load(directory / "service.yaml")
    except FlowError as exc:
        return None, [Problem.from_error(exc, str(directory))]
    specs: dict[str, FlowSpec] = {}
    for path in sorted(directory.glob(FLOW_GLOB)):
        try:
            spec = parse_flow(source.read(path))
        except FlowError as exc:
            problems.append(Problem.from_error(exc, str(path)))
            continue
        if spec.name in specs:
            problems.append(
                Problem.of("F000", str(path), 1, N_("flow %(flow)r defined twice"), flow=spec.name)
            )
            continue
        specs[spec.name] = spec
    if problems:  # linting half a directory would only add misleading follow-ups
        return None, problems
    problems += lint(specs, texts, entry, triage, resources)
    if any(p.is_error for p in problems):
        return None, problems
    digest = hashlib.sha256()
    for path in flow_files(directory):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    flows = {name: CompiledFlow.compile(spec) for name, spec in specs.items()}
    version = digest.hexdigest()[:12]
    return Bundle(version, flows, texts, entry, triage, resources, hours), problems


@dataclass
class FlowRegistry:
    """The current bundle and the recent ones, by version."""

    directory: Path
    current: Bundle
    versions: OrderedDict[str, Bundle] = field(default_factory=OrderedDict)
    seen: tuple[tuple[str, int, int], ...] = ()

    @classmethod
    def load(cls, directory: Path) -> FlowRegistry:
        seen = fingerprint(directory)
        registry = cls(directory, _must(directory))
        registry.seen = seen
        registry.versions[registry.current.version] = registry.current
        return registry

    def reload(self, directory: Path | None = None) -> Bundle:
        """Validate, compile and swap in; raises `FlowError` and keeps the old on any error."""
        directory = directory or self.directory
        seen = fingerprint(directory)
        bundle = _must(directory)
        self.directory, self.current, self.seen = directory, bundle, seen
        self.versions[bundle.version] = bundle
        self.versions.move_to_end(bundle.version)
        while len(self.versions) > KEEP_VERSIONS:
            self.versions.popitem(last=False)
        return bundle

    def refresh(self) -> bool:
        """Reload if a file changed since the last look; True when a new bundle went live.

        An invalid edit is logged (codes and files, never a victim's words) and ignored until
        the files change again.
        """
        seen = fingerprint(self.directory)
        if seen == self.seen:
            return False
        self.seen = seen
        try:
            before = self.current.version
            return self.reload().version != before
        except FlowError as exc:
            log.warning("flows in %s not reloaded: %s", self.directory, exc)
            return False

    def entry(self) -> Bundle:
        return self.current

    def for_session(self, version: str) -> Bundle | None:
        return self.versions.get(version)

    async def pinned(self, version: str) -> Bundle | None:
        """`flow_source.FlowSource`: only the versions this process has loaded itself."""
        return self.versions.get(version)

    async def follow(self) -> bool:
        """`flow_source.FlowSource`: the directory's files, looked at again."""
        return self.refresh()


def _must(directory: Path) -> Bundle:
    bundle, problems = load_bundle(directory)
    if bundle is None:
        errors = [str(p) for p in problems if p.is_error]
        raise FlowError("; ".join(errors[:10]) + (" ..." if len(errors) > 10 else ""))
    return bundle
