"""How the simulated user complains: several natural phrasings per wish, not one fixed sentence.

A user who notices a broken preference complains only sometimes (the episode's
``complaint_rate``) and in one of the phrasings below, sampled per episode.
Phrasing 0 is the world's original sentence; the others say the same with
other words, the other direction first ("Not Celsius: I wanted Fahrenheit"),
values with units, and order wishes in other terms ("schedule" for the
calendar).
"""

from __future__ import annotations

import random

PHRASINGS: dict[tuple[str, str], tuple[str, ...]] = {
    ("units", "imperial"): (
        "I wanted the temperature in Fahrenheit, not Celsius.",
        "Not Celsius, please: I wanted Fahrenheit.",
        "Give me the forecast in Fahrenheit next time.",
        "Why Celsius? I read temperatures in Fahrenheit.",
    ),
    ("units", "metric"): (
        "Why Fahrenheit? I read temperatures in Celsius.",
        "Not Fahrenheit, please: Celsius.",
        "I wanted the forecast in Celsius.",
        "Temperatures in Celsius, please, not Fahrenheit.",
    ),
    ("reminder", "none"): (
        "I did not want a reminder on that event.",
        "No reminders on my events, please.",
        "Don't set a reminder when you add events for me.",
    ),
    ("reminder", "15"): (
        "You forgot my 15-minute reminder on the event.",
        "Alert me 15 minutes before, please.",
        "I need a reminder fifteen minutes ahead of each event.",
        "Remind me a quarter of an hour before it starts.",
    ),
    ("reminder", "30"): (
        "You forgot my 30-minute reminder on the event.",
        "Alert me 30 minutes before, please.",
        "I need a reminder half an hour ahead.",
        "Remind me thirty minutes before it starts.",
    ),
    ("notify", "true"): (
        "You sent the message without notifying them.",
        "Make their phone buzz when you message them.",
        "They never saw it: ping their phone next time.",
        "Please notify the recipient when you send a message.",
    ),
    ("notify", "false"): (
        "Please don't ping people's phones with notify.",
        "Don't make their phone buzz for every message.",
        "Send messages quietly, without notifying anyone.",
    ),
    ("order", "calendar_first"): (
        "You booked a table without checking my calendar first.",
        "Check my calendar before booking anything.",
        "Look at my calendar first, then book.",
        "Please check the calendar before you book a table.",
    ),
}


def say(wish: tuple[str, str], rng: random.Random | None) -> str:
    """The complaint about ``wish``: the original sentence, or a phrasing drawn from ``rng``."""
    variants = PHRASINGS[wish]
    return variants[0] if rng is None else rng.choice(variants)
