"""FHIR date/dateTime/instant strings as day intervals, and calendar-month arithmetic."""

from __future__ import annotations

import calendar
from datetime import date

# A FHIR date of any precision is the interval [first day, last day]. A dateTime with a time keeps
# the date part as written: converting to UTC would move late-evening results to the next day and
# break the day-exact window edges the criteria are written in.

Span = tuple[date, date]


def parse_span(text: str) -> Span:
    """Interval of days covered by a FHIR date/dateTime/instant; ValueError when malformed.

    "2011" -> (2011-01-01, 2011-12-31); "2012-02" -> (2012-02-01, 2012-02-29);
    "2012-02-03" and "2012-02-03T23:10:00+09:00" -> (2012-02-03, 2012-02-03).
    """
    n = len(text)
    if n == 10 or (n > 10 and text[10] == "T"):
        day = date.fromisoformat(text[:10])
        # fromisoformat also takes week dates ("2012-W05-1") and such; FHIR has only YYYY-MM-DD.
        if text[4] != "-" or text[7] != "-" or not text[5:7].isdigit():
            raise ValueError(text)
        return day, day
    if n == 7 and text[4] == "-" and text[:4].isdigit() and text[5:].isdigit():
        year, month = int(text[:4]), int(text[5:])
        return date(year, month, 1), date(year, month, calendar.monthrange(year, month)[1])
    if n == 4 and text.isdigit():
        year = int(text)
        return date(year, 1, 1), date(year, 12, 31)
    raise ValueError(text)


def is_partial(span: Span) -> bool:
    """True when the interval is longer than one day (year or month precision)."""
    return span[0] != span[1]


def add_months(day: date, months: int) -> date:
    """`day` plus calendar months, the day clamped to the month's end (Jan 31 + 3 -> Apr 30)."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    month += 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def clamp(day: date, span: Span) -> date:
    """The point of `span` closest to `day`."""
    first, last = span
    if day < first:
        return first
    return min(day, last)
