"""Plain-words statements of conventions, in several phrasings, as skills.

Every (family, value) has four paraphrases. Phrasings 0-2 are used in the
tiny policy's pretraining; phrasing 3 (:data:`HELDOUT_PHRASING`) is never
seen in training, so an evaluation with it shows whether a skill written in
other words still works (the evolver will not write the pretraining sentence).
"""

from __future__ import annotations

from bench.toolworld.conventions import FAMILIES, Conventions, validate_conventions
from modeling.blocks import SkillText

TRAIN_PHRASINGS: tuple[int, ...] = (0, 1, 2)
HELDOUT_PHRASING = 3

STATEMENTS: dict[str, dict[str, tuple[str, str, str, str]]] = {
    "date": {
        "iso": ("Dates are written YYYY-MM-DD, for example 2026-11-27.",
                "Write every date as year-month-day with dashes: 2026-03-05.",
                "The tools want ISO dates like 2026-11-27 (YYYY-MM-DD).",
                "Give dates in ISO form, YYYY-MM-DD."),
        "dmy": ("Dates are written DD.MM.YYYY, for example 27.11.2026.",
                "Write every date as day.month.year with dots: 05.03.2026.",
                "The tools want dates like 27.11.2026 (DD.MM.YYYY).",
                "Give dates day first with dots, DD.MM.YYYY."),
        "mdy": ("Dates are written MM/DD/YYYY, for example 11/27/2026.",
                "Write every date as month/day/year with slashes: 03/05/2026.",
                "The tools want US dates like 11/27/2026 (MM/DD/YYYY).",
                "Give dates month first with slashes, MM/DD/YYYY."),
    },
    "time": {
        "h24": ("Times are written on the 24-hour clock, for example 19:00.",
                "Write times as HH:MM, 24-hour: 07:30 or 19:30.",
                "The tools take times like 19:00, never am or pm.",
                "Use 24-hour HH:MM times."),
        "h12": ("Times are written on the 12-hour clock with am or pm, for example 7pm.",
                "Write times like 7pm or 7:30am, no leading zero.",
                "The tools take times like 7:30pm, never 19:30.",
                "Use 12-hour times with am/pm."),
    },
    "name_order": {
        "first_last": ("Contact names are written first name first, like Ann Berg.",
                       "Write names as First Last: Ann Berg.",
                       "find_contact wants names as Ann Berg, not Berg, Ann.",
                       "Give a contact's given name before the family name."),
        "last_first": ("Contact names are written last name first, like Berg, Ann.",
                       "Write names as Last, First with a comma: Berg, Ann.",
                       "find_contact wants names as Berg, Ann, not Ann Berg.",
                       "Give the family name, a comma, then the given name."),
    },
    "units": {
        "metric": ("The user wants weather in metric units (Celsius).",
                   "Ask get_weather for metric units.",
                   "Temperatures in Celsius: leave units at metric.",
                   "Weather reports should be metric."),
        "imperial": ("The user wants weather in imperial units (Fahrenheit).",
                     "Ask get_weather for units imperial.",
                     "Temperatures in Fahrenheit: set units to imperial.",
                     "Weather reports should be imperial, in Fahrenheit."),
    },
    "reminder": {
        "none": ("The user wants no reminders on calendar events.",
                 "Do not set reminder_min on events.",
                 "Create events without a reminder.",
                 "Leave event reminders off."),
        "15": ("Always set reminder_min to 15 on new events.",
               "Every calendar event gets a reminder 15 minutes before.",
               "create_event: add reminder_min 15.",
               "The user wants a 15-minute reminder on each event."),
        "30": ("Always set reminder_min to 30 on new events.",
               "Every calendar event gets a reminder 30 minutes before.",
               "create_event: add reminder_min 30.",
               "The user wants a 30-minute reminder on each event."),
    },
    "notify": {
        "false": ("Send messages without notify.",
                  "Do not set notify on messages.",
                  "Messages go out quietly: notify stays false.",
                  "Leave notify off when messaging."),
        "true": ("Always set notify to true when sending a message.",
                 "Every message should ping the phone: notify true.",
                 "send_message: add notify true.",
                 "The user wants notify=true on each message."),
    },
    "order": {
        "free": ("No need to check the calendar before booking a table.",
                 "Book tables directly, without a calendar check.",
                 "book_table can be called right after the search.",
                 "Skip the calendar check when booking."),
        "calendar_first": ("Check the calendar on that date before booking a table.",
                           "Before book_table, call check_calendar for the same date.",
                           "Always look at the calendar first, then book the table.",
                           "Run check_calendar for the date before every booking."),
    },
}

#: (skill name, description) per family, one per phrasing, so names vary too.
HEADS: dict[str, tuple[tuple[str, str], ...]] = {
    "date": (("date-format", "How to write dates in tool calls."),
             ("dates", "Use when a tool takes a date."),
             ("calendar-dates", "Date format for bookings and events."),
             ("date-style", "Dates for this user.")),
    "time": (("time-format", "How to write times in tool calls."),
             ("times", "Use when a tool takes a time."),
             ("clock-style", "Time format for bookings and events."),
             ("time-style", "Times for this user.")),
    "name_order": (("contact-names", "How to write names for find_contact."),
                  ("names", "Use when looking up a contact."),
                  ("name-order", "Order of a contact's names."),
                  ("directory-names", "Names in the contact directory.")),
    "units": (("weather-units", "Units for weather requests."),
              ("units", "Use when asking for the weather."),
              ("temperature", "How the user likes temperatures."),
              ("forecast-units", "Weather preferences.")),
    "reminder": (("event-reminders", "Reminders on calendar events."),
                 ("reminders", "Use when creating an event."),
                 ("calendar-reminder", "What the user wants on new events."),
                 ("reminder-policy", "Event reminder preference.")),
    "notify": (("message-notify", "Notifications when messaging."),
               ("notify", "Use when sending a message."),
               ("messaging", "How the user wants messages sent."),
               ("message-policy", "Message preference.")),
    "order": (("booking-order", "What to do before booking a table."),
              ("bookings", "Use when booking a restaurant."),
              ("calendar-first", "Order of calls for a booking."),
              ("booking-policy", "Booking preference.")),
}

#: Skills that are true but irrelevant to the conventions (pretraining distractors).
DISTRACTORS: tuple[SkillText, ...] = (
    SkillText("tone", "How to talk to the user.", "Keep final answers short and friendly."),
    SkillText("search-results", "Reading restaurant search results.",
              "search_restaurants lists the best rated place first."),
    SkillText("flights", "Use when booking a flight.", "Flights need the airport code, like OSL."),
    SkillText("email", "Use when writing an email.", "Emails start with a greeting line."),
    SkillText("errors", "When a tool returns an error.",
              "Read the error, fix the argument it names, and call the tool again."),
    SkillText("ids", "Using ids from earlier calls.",
              "Pass the id a tool returned, exactly as it was returned."),
    SkillText("privacy", "Handling personal data.", "Never share a contact's id with others."),
    SkillText("hotels", "Use when booking a hotel.", "Hotels need check-in and check-out dates."),
    SkillText("conversions", "Use for unit conversions.",
              "convert takes unit codes like km, mi, kg and lb."),
    SkillText("taxis", "Use when ordering a taxi.", "Taxis need a pickup address."),
    SkillText("summaries", "After several calls.", "Mention the reference id in the answer."),
    SkillText("shopping", "Use for shopping lists.", "Group items by shop."),
)


def statement(family: str, value: str, phrasing: int = 0) -> SkillText:
    """One convention stated as a skill, in paraphrase ``phrasing`` (0-3)."""
    name, description = HEADS[family][phrasing]
    return SkillText(name, description, STATEMENTS[family][value][phrasing])


def state_conventions(conventions: Conventions, phrasing: int = 0,
                      families: list[str] | None = None) -> list[SkillText]:
    """Plain-words skills stating ``conventions`` (all families, or only ``families``).

    This is what the ``oracle`` arm injects: render the result with
    ``modeling.blocks.render_skills_block``.
    """
    full = validate_conventions(conventions)
    chosen = list(FAMILIES) if families is None else families
    return [statement(f, full[f], phrasing) for f in chosen]
