"""The world state the tools act on: contacts, restaurants, a calendar, weather.

A world is generated from a seed alone, so two episodes with the same seed
start from the same state; the conventions in force are attached to it, so
its tools enforce them. Everything a tool changes is appended to ``effects``
as a plain, convention-free record: that log is what the episode verifier
compares with the plan.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass, field
from typing import Any

from bench.toolworld.conventions import Conventions, conventions_for_day, validate_conventions

FIRST_NAMES = (
    "Ann", "Bob", "Clara", "David", "Eva", "Finn", "Greta", "Hugo",
    "Ida", "Jonas", "Karin", "Lars", "Maja", "Nils", "Olga", "Per",
)
LAST_NAMES = (
    "Berg", "Dahl", "Eng", "Falk", "Holm", "Lund", "Moe", "Nyberg",
    "Ruud", "Strand", "Vik", "Aas", "Bakke", "Haug", "Lie", "Sand",
)
CITIES = ("Oslo", "Bergen", "Paris", "Rome", "Berlin", "Vienna", "Madrid", "Lisbon")
CUISINES = ("italian", "thai", "sushi", "indian", "french", "mexican")
SKIES = ("sun", "rain", "cloud", "snow", "wind")
CONVERSIONS: dict[tuple[str, str], float] = {
    ("km", "mi"): 0.621371,
    ("mi", "km"): 1.609344,
    ("kg", "lb"): 2.204623,
    ("lb", "kg"): 0.453592,
    ("l", "gal"): 0.264172,
    ("gal", "l"): 3.785412,
    ("m", "ft"): 3.280840,
    ("ft", "m"): 0.304800,
}
UNITS = tuple(sorted({u for pair in CONVERSIONS for u in pair}))


@dataclass(frozen=True, slots=True)
class Contact:
    id: str
    name: str  # canonical, title case


@dataclass(frozen=True, slots=True)
class Restaurant:
    id: str
    city: str
    cuisine: str
    rating: float


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    title: str
    date: dt.date
    start: tuple[int, int]
    duration_min: int
    attendee_id: str | None = None
    reminder_min: int | None = None


@dataclass
class World:
    """Mutable world state for one episode, with the conventions its tools enforce."""

    seed: str
    conventions: Conventions
    contacts: list[Contact]
    restaurants: list[Restaurant]
    events: list[Event]
    effects: list[dict[str, Any]] = field(default_factory=list)
    _counters: dict[str, int] = field(default_factory=dict)

    @classmethod
    def generate(cls, seed: int | str, conventions: Conventions | None = None) -> World:
        """Build the world for ``seed`` (conventions default to the base ones)."""
        rng = random.Random(f"toolworld-world:{seed}")
        names = [f"{a} {b}" for a in FIRST_NAMES for b in LAST_NAMES]
        picked = rng.sample(names, 24)
        contact_ids = rng.sample(range(10, 100), len(picked))
        contacts = [Contact(f"c{i}", n) for i, n in zip(contact_ids, picked, strict=True)]
        restaurants: list[Restaurant] = []
        rest_ids = iter(rng.sample(range(10, 100), 90))
        for city in CITIES:
            for cuisine in CUISINES:
                for _ in range(rng.randint(1, 2)):
                    rating = round(rng.uniform(3.0, 5.0), 1)
                    restaurants.append(Restaurant(f"r{next(rest_ids)}", city, cuisine, rating))
        events: list[Event] = []
        for i in range(6):
            day = dt.date(2026, 11, 1) + dt.timedelta(days=rng.randint(0, 60))
            events.append(Event(f"e{i + 1}", rng.choice(("Gym", "Standup", "Lunch")), day,
                                (rng.randint(8, 18), 0), 60))
        return cls(
            seed=str(seed),
            conventions=validate_conventions(conventions or {}),
            contacts=contacts,
            restaurants=restaurants,
            events=events,
            _counters={"e": len(events)},
        )

    @classmethod
    def for_day(cls, day: int, seed: int | str) -> World:
        """The world for ``seed`` under the conventions the schedule sets for ``day``."""
        return cls.generate(seed, conventions_for_day(day))

    # --- queries used by tools and task templates --------------------------

    def contact_by_name(self, name: str) -> Contact | None:
        return next((c for c in self.contacts if c.name == name), None)

    def contact_by_id(self, contact_id: str) -> Contact | None:
        return next((c for c in self.contacts if c.id == contact_id), None)

    def restaurant_by_id(self, restaurant_id: str) -> Restaurant | None:
        return next((r for r in self.restaurants if r.id == restaurant_id), None)

    def search(self, city: str, cuisine: str) -> list[Restaurant]:
        """Restaurants in ``city`` serving ``cuisine``, best rated first (ties by id)."""
        found = [r for r in self.restaurants if r.city == city and r.cuisine == cuisine]
        return sorted(found, key=lambda r: (-r.rating, r.id))

    def events_on(self, day: dt.date) -> list[Event]:
        return sorted((e for e in self.events if e.date == day), key=lambda e: e.start)

    def weather(self, city: str, day: dt.date) -> tuple[int, str]:
        """Deterministic temperature (Celsius) and sky for a city and date."""
        rng = random.Random(f"toolworld-weather:{self.seed}:{city}:{day.isoformat()}")
        base = {1: -2, 2: -1, 3: 4, 4: 9, 5: 14, 6: 18, 7: 21, 8: 20, 9: 15, 10: 9, 11: 4, 12: 0}
        return base[day.month] + rng.randint(-4, 8), rng.choice(SKIES)

    def next_id(self, prefix: str) -> str:
        self._counters[prefix] = self._counters.get(prefix, 0) + 1
        return f"{prefix}{self._counters[prefix]}"

    def record(self, kind: str, **fields: Any) -> None:
        self.effects.append({"kind": kind, **fields})
