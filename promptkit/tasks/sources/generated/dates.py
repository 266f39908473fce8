"""The calendar: leap years, days in a month, weekdays and months counted forward, which date comes first (Python's
calendar and datetime: the proleptic Gregorian calendar)."""

from __future__ import annotations

import calendar
import datetime
import random

from .build import Generator, each_both_ways, forever, generation, yes_no

WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]


def _date(d: datetime.date) -> str:
    return f"{d.day} {MONTHS[d.month - 1]} {d.year}"


def leap_year(rng: random.Random):
    years = list(range(1600, 2401))
    leap = [y for y in years if calendar.isleap(y)]
    common = [y for y in years if not calendar.isleap(y)]
    # some of the common years asked about are centuries (1900, 2100): the rule's exception
    centuries = [y for y in common if y % 100 == 0]

    def one(rng, year, truth):
        y = year if truth else rng.choice(centuries if rng.random() < 0.05 else common)
        return yes_no(f"Is {y} a leap year?", truth)
    return each_both_ways(rng, leap, one)


def days_in_month(rng: random.Random):
    choices = ["28", "29", "30", "31"]
    months = {n: [(y, m) for y in range(1600, 2401) for m in range(1, 13) if calendar.monthrange(y, m)[1] == n] for n in (28, 29, 30, 31)}

    def one(rng, _):
        year, month = rng.choice(months[rng.choice((28, 29, 30, 31))])  # each answer equally often
        return {"input": f"How many days are there in {MONTHS[month - 1]} {year}?", "choices": choices,
                "target": choices.index(str(calendar.monthrange(year, month)[1]))}
    return forever(rng, one)


def weekday_after(rng: random.Random):
    def one(rng, _):
        start, n = rng.randrange(7), rng.randint(1, 30)
        unit = "day" if n == 1 else "days"
        return {"input": f"What day of the week is {n} {unit} after a {WEEKDAYS[start]}?", "choices": list(WEEKDAYS),
                "target": (start + n) % 7}
    return forever(rng, one)


def month_after(rng: random.Random):
    def one(rng, _):
        start, n = rng.randrange(12), rng.randint(1, 11)
        unit = "month" if n == 1 else "months"
        return {"input": f"Which month comes {n} {unit} after {MONTHS[start]}?", "choices": list(MONTHS),
                "target": (start + n) % 12}
    return forever(rng, one)


def earlier_date(rng: random.Random):
    def one(rng, _):
        a = datetime.date(1900, 1, 1) + datetime.timedelta(days=rng.randrange(200 * 365))
        b = a + datetime.timedelta(days=rng.choice([-1, 1]) * rng.randint(20, 3000))
        pair = [_date(a), _date(b)]
        return {"input": f"Which date comes first, {pair[0]} or {pair[1]}?", "choices": pair,
                "target": pair.index(_date(min(a, b)))}
    return forever(rng, one)


def month_number(rng: random.Random):
    def one(rng, _):
        m = rng.randrange(12)
        year = rng.randint(1950, 2049)
        return generation(f"In the date {m + 1:02d}/{rng.randint(1, 28):02d}/{year} (month/day/year), which month is it?", MONTHS[m])
    return forever(rng, one)


def next_weekday_answer(rng: random.Random):
    def one(rng, _):
        start, n = rng.randrange(7), rng.randint(1, 30)
        unit = "day" if n == 1 else "days"
        return generation(f"What day of the week is {n} {unit} after {WEEKDAYS[start]}?", WEEKDAYS[(start + n) % 7])
    return forever(rng, one)


def _g(name, make, fmt, instruction, **options):
    return Generator(name, make, fmt, instruction, (), options=options)


GENERATORS = [
    _g("leap_year", leap_year, "yes/no", "Answer yes or no: is the year a leap year?"),
    _g("days_in_month", days_in_month, "4-5 way", "Give the number of days in the month."),
    _g("weekday_after", weekday_after, "many-way", "Count the days forward and name the day of the week."),
    _g("month_after", month_after, "many-way", "Count the months forward and name the month."),
    _g("earlier_date", earlier_date, "options in input", "Say which of the two dates comes first."),
    _g("month_of_date", month_number, "exact", "Name the month of the date.", max_new_tokens=6),
    _g("weekday_later", next_weekday_answer, "exact", "Name the day of the week.", max_new_tokens=6),
]
