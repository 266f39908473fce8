"""The project's files say what and why, not how the work on them was organised: no names of work periods and
no ticket numbers (the exact words are in FORBIDDEN) in code, comments, suite files or docs. A finding is named
file:line. A date or a commit says when.

Third-party API names that contain the word are allowed precisely, one pattern each, never by file:
pytest's fixture scope `scope="session"` and its `request.session.items`, and the Flask template global `session` that the template sandbox
refuses by name (listed beside `url_for`). Class names are matched case-sensitively (`requests.Session`); a
CamelCase name such as `InferenceSession` never matches the word at all."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = re.compile(r"\bsessions?\b|\bissues?\s+#?\d+|\bissue's\b", re.IGNORECASE)
ALLOWED = [
    re.compile(r"""scope=["']session["']"""),               # pytest's fixture scope
    re.compile(r"\brequest\.session\.items\b"),               # pytest's FixtureRequest.session: the collected tests
    re.compile(r"""(["'`])session\1,\s*(["'`])url_for\2"""),  # Flask's template globals, refused by the sandbox
    re.compile(r"\b[A-Za-z_][\w.]*\.Session\b"),            # a Session class (requests.Session), case-sensitive
]


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    files = []
    for name in filter(None, names):
        path = ROOT / name.decode()
        if path.resolve() == Path(__file__).resolve() or not path.is_file():
            continue
        head = path.read_bytes()[:8192]
        if b"\0" in head:
            continue  # binary
        files.append(path)
    return files


def findings(text: str) -> list[tuple[int, str]]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        kept = line
        for pattern in ALLOWED:
            kept = pattern.sub("", kept)
        if FORBIDDEN.search(kept):
            found.append((number, line.strip()))
    return found


def test_no_words_about_how_the_work_was_organised():
    problems = []
    for path in tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue  # not text
        problems += [f"{path.relative_to(ROOT)}:{n}: {line[:160]}" for n, line in findings(text)]
    assert not problems, "say what and why (a date or a commit for when) instead of:\n" + "\n".join(problems)


def test_the_check_finds_the_words_and_allows_only_the_named_apis():
    period, ticket = "sess" + "ion", "iss" + "ue"  # spelled in parts, so this file holds no finding itself
    assert findings(f"we did this in {period} 28\n") == [(1, f"we did this in {period} 28")]
    assert findings(f"{period.title()}s 31-33 measured it") and findings(f"the {ticket}'s target")
    assert findings(f"see {ticket} 17")
    assert findings("fixed in Issue #4")
    assert not findings('@pytest.fixture(scope="session")') and not findings("for item in request.session.items")
    assert not findings('    "request", "session", "url_for",')
    assert not findings("client = requests.Session()") and not findings("ort.InferenceSession(path)")
    assert findings('@pytest.fixture(scope="session")  # shared by the session')  # the allowance is not a blanket one
    assert not findings("the tissue 3 sample") and not findings("reissue 5 times")
