"""The flows studio's "Try it": a draft run as a victim would meet it, with nothing carried out.

Only the engine's pure step runs: its effects (a report, a handoff, a receipt) are listed as what
*would* happen and are never sealed, queued or handed to a counselor, so trying a draft cannot
put a test case in front of a counselor. The conversation is per administrator, in Redis for an
hour, and starts again when the draft changes under it. What the administrator types is a test
of their own, never a victim's words.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from redis.asyncio import Redis

from backend.core import redis_keys
from backend.core.conversation import Inbound, Pseudonym, Session, StepResult
from backend.flows import engine
from backend.flows.bundle_files import BundleFiles, compile_files
from backend.flows.engine import Context

_WHO = Pseudonym("studio-sandbox")
CHANNEL = "studio"


@dataclass
class Line:
    who: str  # "you", "bot" or "effect"
    text: str
    buttons: list[tuple[str, str]] = field(default_factory=list)
    # An effect's name, so the studio says "would ..." in the administrator's language.
    effect: str | None = None


@dataclass
class Trial:
    lines: list[Line]
    ended: bool = False
    restarted: bool = False


class Sandbox:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis

    async def show(self, counselor_id: int) -> Trial:
        stored = await self._load(counselor_id)
        return Trial([], False) if stored is None else stored[2]

    async def reset(self, counselor_id: int) -> None:
        await self._redis.delete(redis_keys.studio_try_key(counselor_id))

    async def turn(
        self,
        counselor_id: int,
        files: BundleFiles,
        digest: str,
        *,
        text: str | None = None,
        button: str | None = None,
        language: str = "ko",
    ) -> Trial:
        """One turn of the draft; a `FlowError` (raised by compiling) when the draft is invalid."""
        bundle, problems = compile_files(files)
        if bundle is None:
            errors = "; ".join(str(p) for p in problems if p.is_error)
            return Trial([Line("effect", f"The draft does not load: {errors}")], True)
        stored = await self._load(counselor_id)
        now = int(time.time())
        ctx = Context(now, bundle.hours.is_open(datetime.fromtimestamp(now, UTC)))
        inbound = Inbound(_WHO, CHANNEL, text=text, button=button, language=language)
        restarted = stored is not None and stored[0] != digest
        pinned = None if stored is None or restarted else stored[1]
        if stored is None or pinned is None:
            lines: list[Line] = []
            fresh = bundle.new_session(inbound, "studio-" + digest[:8])
            result = engine.start(bundle, fresh, ctx, inbound)
        else:
            lines = stored[2].lines
            if text or button:
                lines.append(Line("you", text or f"[{button}]"))
            result = engine.step(bundle, pinned, inbound, ctx)
        lines += _said(result)
        trial = Trial(lines[-200:], result.session.ended, restarted)
        await self._save(counselor_id, digest, None if trial.ended else result.session, trial)
        return trial

    async def _load(self, counselor_id: int) -> tuple[str, Session | None, Trial] | None:
        raw = await self._redis.get(redis_keys.studio_try_key(counselor_id))
        if raw is None:
            return None
        data = json.loads(raw)
        session = None if data["session"] is None else Session.from_json(data["session"].encode())
        lines = [
            Line(x["who"], x["text"], [tuple(b) for b in x["buttons"]], x.get("effect"))
            for x in data["lines"]
        ]
        return data["digest"], session, Trial(lines, data["ended"])

    async def _save(
        self, counselor_id: int, digest: str, session: Session | None, trial: Trial
    ) -> None:
        data = {
            "digest": digest,
            "session": None if session is None else session.to_json().decode(),
            "lines": [asdict(x) for x in trial.lines],
            "ended": trial.ended,
        }
        await self._redis.set(
            redis_keys.studio_try_key(counselor_id),
            json.dumps(data, ensure_ascii=False),
            ex=redis_keys.STUDIO_TRY_TTL_S,
        )


def _said(result: StepResult) -> list[Line]:
    lines = [Line("bot", m.text, [(b.id, b.label) for b in m.buttons]) for m in result.messages]
    lines += [
        Line(
            "effect",
            f"TEST: would {type(e).__name__} (not carried out)",
            effect=type(e).__name__,
        )
        for e in result.effects
    ]
    return lines
