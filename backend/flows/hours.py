"""When counselors answer, from `flows/service.yaml`, so the bot can be honest after hours."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from backend.core.errors import N_, FlowError
from backend.flows import source

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_KEYS = frozenset({"schema", "always_open", "utc_offset_h", "weekly", "minutes_per_case"})


@dataclass(frozen=True)
class ServiceHours:
    """Open all week by default (the centre is 24/7); `weekly` lists "HH:MM-HH:MM" per day."""

    always_open: bool = True
    utc_offset_h: int = 9  # Korea has no daylight saving time
    weekly: tuple[tuple[tuple[int, int], ...], ...] = ()  # per weekday: (from_min, to_min)
    minutes_per_case: int = 10

    @classmethod
    def load(cls, path: Path) -> ServiceHours:
        if not path.exists():
            return cls()
        data = source.read(path).data
        if not isinstance(data, dict) or set(data) - _KEYS or data.get("schema") != 1:
            raise FlowError(
                N_("`schema: 1` and only %(keys)s"),
                where=str(path),
                keys=sorted(_KEYS - {"schema"}),
            )
        always = data.get("always_open", True)
        offset = data.get("utc_offset_h", 9)
        per_case = data.get("minutes_per_case", 10)
        weekly_raw = data.get("weekly", {})
        if not isinstance(always, bool):
            raise FlowError(N_("always_open must be true or false"), where=str(path))
        if not isinstance(offset, int) or not -12 <= offset <= 14:
            raise FlowError(N_("utc_offset_h must be hours from -12 to 14"), where=str(path))
        if not isinstance(per_case, int) or not 1 <= per_case <= 240:
            raise FlowError(N_("minutes_per_case must be 1 to 240"), where=str(path))
        if not isinstance(weekly_raw, dict) or set(weekly_raw) - set(_DAYS):
            raise FlowError(N_('weekly maps mon..sun to "HH:MM-HH:MM"'), where=str(path))
        weekly = tuple(_span(path, weekly_raw.get(day)) for day in _DAYS)
        return cls(always, offset, weekly, per_case)

    def is_open(self, now: datetime) -> bool:
        if self.always_open:
            return True
        local = now.astimezone(UTC) + timedelta(hours=self.utc_offset_h)
        minute = local.hour * 60 + local.minute
        return any(start <= minute < end for start, end in self.weekly[local.weekday()])


def _span(path: Path, raw: object) -> tuple[tuple[int, int], ...]:
    if raw is None:
        return ()
    bad = FlowError(N_('%(value)r is not "HH:MM-HH:MM"'), where=str(path), value=raw)
    if not isinstance(raw, str):
        raise bad
    try:
        start, end = (int(h) * 60 + int(m) for h, m in (p.split(":") for p in raw.split("-")))
    except ValueError:
        raise bad from None
    if not 0 <= start < end <= 24 * 60:
        raise bad
    return ((start, end),)
