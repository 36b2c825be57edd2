"""Training windows: when a tenant may train, from traffic, a cron window or a calendar.

A `Trigger` answers one question, for a tenant at a time `now` (seconds since the
epoch, from the caller's clock, so tests drive it): is a window open, and which?

- `IdleTrigger`: no agent traffic for `idle_s`. The last traffic comes from an
  `Activity` (molt: `store.training.TrainingStore.last_traffic_at`, read from the
  turns table, so it sees every proxy process). Replays are not traffic. A tenant with
  no traffic ever has no window (nothing to learn from). The window has no end of
  its own: it lasts until traffic returns.
- `CronTrigger`: a window opens at each fire time of a crontab expression
  (APScheduler's parser and time-zone rules) and lasts `minutes`.
- `CalendarTrigger`: an ICS file (parsed with `icalendar`, recurring events expanded
  with `dateutil.rrule`, EXDATEs honoured; RECURRENCE-ID overrides are not applied).
  Our instantiation offers both readings of "a free slot", chosen by `mode`:
  `events` (default): events whose summary contains a marker ("molt-training") are
  the windows, so a person books the model's training time like a meeting;
  `free`: the gaps of at least `min_s` between busy events (events not marked
  TRANSPARENT) are the windows, each ending at the next busy event. Times without a
  zone (floating) and all-day dates are read in `timezone`. The file is parsed again
  only when its modification time changes.

Triggers never start anything; `trainer/schedule.py` combines them (any open trigger
opens a window) and runs jobs in the windows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

# How far around `now` a calendar's recurring events are expanded.
_HORIZON = timedelta(days=8)


@dataclass(frozen=True, slots=True)
class Window:
    """An open training window. `closes_at` None: no end of its own (idle, manual)."""

    trigger: str  # "idle" | "cron" | "calendar" | "manual"
    opened_at: float
    closes_at: float | None
    detail: str = ""
    # Agent traffic pauses a job in this window (not in one a person asked for).
    yields_to_traffic: bool = True

    @property
    def key(self) -> str:
        """Names this window: the same window seen at two ticks has the same key."""
        return f"{self.trigger}:{self.opened_at:.3f}"

    def is_open(self, now: float) -> bool:
        return self.opened_at <= now and (self.closes_at is None or now < self.closes_at)

    def to_dict(self) -> dict[str, Any]:
        return {"trigger": self.trigger, "opened_at": self.opened_at,
                "closes_at": self.closes_at, "detail": self.detail,
                "yields_to_traffic": self.yields_to_traffic}


class Activity(Protocol):
    """When a tenant's agent was last seen (0.0: never)."""

    async def last_traffic_at(self, tenant_id: str) -> float: ...


class Trigger(Protocol):
    async def window(self, tenant_id: str, now: float) -> Window | None: ...


class IdleTrigger:
    def __init__(self, activity: Activity, idle_s: float) -> None:
        if idle_s <= 0:
            raise ValueError("idle_s must be positive")
        self.activity = activity
        self.idle_s = idle_s

    async def window(self, tenant_id: str, now: float) -> Window | None:
        last = await self.activity.last_traffic_at(tenant_id)
        if last <= 0 or now - last < self.idle_s:
            return None
        return Window("idle", last + self.idle_s, None, f"no traffic for {self.idle_s / 60:g} min")


class CronTrigger:
    def __init__(self, expr: str, minutes: float, timezone: str = "UTC") -> None:
        from apscheduler.triggers.cron import CronTrigger as Cron

        if minutes <= 0:
            raise ValueError("a cron window needs a positive duration")
        try:
            self._tz = ZoneInfo(timezone)
            self._cron = Cron.from_crontab(expr, timezone=self._tz)
        except (ValueError, KeyError) as exc:
            raise ValueError(f"bad cron window {expr!r} ({timezone}): {exc}") from exc
        self.expr = expr
        self.duration_s = minutes * 60.0

    async def window(self, tenant_id: str, now: float) -> Window | None:
        return self.at(now)

    def at(self, now: float) -> Window | None:
        # the first fire time after `now - duration`: if it is not after `now`, its window
        # is open (it ends after `now`); windows are half-open, [fire, fire + duration)
        start = datetime.fromtimestamp(now - self.duration_s, tz=self._tz) + timedelta(
            microseconds=1)
        fire = self._cron.get_next_fire_time(None, start)
        if fire is None or fire.timestamp() > now:
            return None
        opened = fire.timestamp()
        return Window("cron", opened, opened + self.duration_s, self.expr)


@dataclass(frozen=True, slots=True)
class _Occurrence:
    start: float
    end: float
    summary: str
    busy: bool


class CalendarTrigger:
    def __init__(self, path: Path, *, mode: Literal["events", "free"] = "events",
                 marker: str = "molt-training", min_minutes: float = 60.0,
                 timezone: str = "UTC") -> None:
        self.path = Path(path)
        self.mode = mode
        self.marker = marker.lower()
        self.min_s = min_minutes * 60.0
        self._tz: tzinfo = ZoneInfo(timezone)
        self._events: list[Any] = []
        self._mtime: float | None = None

    async def window(self, tenant_id: str, now: float) -> Window | None:
        return self.at(now)

    def at(self, now: float) -> Window | None:
        occurrences = list(self._occurrences(now))
        if self.mode == "events":
            for o in sorted(occurrences, key=lambda o: o.start):
                if self.marker in o.summary.lower() and o.start <= now < o.end:
                    return Window("calendar", o.start, o.end, o.summary)
            return None
        busy = [o for o in occurrences if o.busy]
        if any(o.start <= now < o.end for o in busy):
            return None
        horizon = _HORIZON.total_seconds()
        before = max((o.end for o in busy if o.end <= now), default=now - horizon)
        after = min((o.start for o in busy if o.start > now), default=math.inf)
        if min(after, now + horizon) - before < self.min_s:
            return None
        closes = None if math.isinf(after) else after
        return Window("calendar", before, closes, "free slot")

    # -- parsing -------------------------------------------------------------
    def _load(self) -> list[Any]:
        import icalendar

        try:
            mtime = self.path.stat().st_mtime
        except OSError as exc:
            raise ValueError(f"calendar {self.path}: {exc}") from exc
        if mtime != self._mtime:
            try:
                cal = icalendar.Calendar.from_ical(self.path.read_bytes())
            except ValueError as exc:
                raise ValueError(f"calendar {self.path} is not a valid ICS file: {exc}") from exc
            self._events = list(cal.walk("VEVENT"))
            self._mtime = mtime
        return self._events

    def _aware(self, value: date | datetime) -> datetime:
        if not isinstance(value, datetime):
            return datetime.combine(value, time(), self._tz)
        return value if value.tzinfo is not None else value.replace(tzinfo=self._tz)

    def _occurrences(self, now: float) -> Iterator[_Occurrence]:
        from dateutil.rrule import rrulestr

        lo = datetime.fromtimestamp(now, tz=UTC) - _HORIZON
        hi = datetime.fromtimestamp(now, tz=UTC) + _HORIZON
        for ev in self._load():
            if ev.get("DTSTART") is None:
                continue
            start = self._aware(ev.start)
            try:
                end = self._aware(ev.end)
            except (ValueError, KeyError, TypeError):
                end = start
            length = end - start
            summary = str(ev.get("SUMMARY") or "")
            busy = str(ev.get("TRANSP") or "OPAQUE").upper() != "TRANSPARENT"
            starts: list[datetime] = [start]
            rules = ev.get("RRULE")
            if rules is not None:
                text = rules.to_ical().decode()
                try:
                    rule = rrulestr(text, dtstart=start)
                except ValueError as exc:
                    raise ValueError(f"calendar {self.path}: bad RRULE {text!r}: {exc}") from exc
                starts = rule.between(lo - length, hi, inc=True)
                excluded = {self._aware(d).timestamp() for d in ev.exdates}
                starts = [s for s in starts if s.timestamp() not in excluded]
            for s in starts:
                if s + length >= lo and s <= hi:
                    yield _Occurrence(s.timestamp(), (s + length).timestamp(), summary, busy)
