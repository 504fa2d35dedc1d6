"""All flows of a flows directory, compiled, by name and version."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from backend.errors import FlowError
from backend.flows.engine import CompiledFlow
from backend.flows.spec import load_yaml, parse_flow
from backend.flows.texts import Texts

ENTRY_FLOW = "report"


@dataclass
class FlowRegistry:
    """Every version ever loaded stays, so a conversation finishes on the version it began."""

    current: dict[str, CompiledFlow] = field(default_factory=dict)
    versions: dict[tuple[str, str], CompiledFlow] = field(default_factory=dict)

    @classmethod
    def load(cls, directory: Path) -> FlowRegistry:
        registry = cls()
        registry.reload(directory)
        return registry

    def reload(self, directory: Path) -> None:
        """Validate and compile everything first; swap in only if all of it is good."""
        texts = Texts.load(directory / "locales")
        locale_digest = hashlib.sha256()
        for path in sorted((directory / "locales").glob("*.yaml")):
            locale_digest.update(path.read_bytes())
        compiled: dict[str, CompiledFlow] = {}
        for path in sorted(directory.glob("*.flow.yaml")):
            spec = parse_flow(load_yaml(path), str(path))
            digest = hashlib.sha256(path.read_bytes() + locale_digest.digest()).hexdigest()[:12]
            if spec.name in compiled:
                raise FlowError(f"{path}: flow {spec.name!r} is defined twice")
            compiled[spec.name] = CompiledFlow.compile(spec, digest, texts)
        if ENTRY_FLOW not in compiled:
            raise FlowError(f"{directory}: the entry flow {ENTRY_FLOW!r} is missing")
        self.current = compiled
        for flow in compiled.values():
            self.versions.setdefault((flow.spec.name, flow.version), flow)

    def entry(self) -> CompiledFlow:
        return self.current[ENTRY_FLOW]

    def for_session(self, name: str, version: str) -> CompiledFlow | None:
        return self.versions.get((name, version))
