"""Bounded mutation fuzzing of the YAML/Jinja loaders (run by .ci/run; not collected by pytest).

    python tests/fuzz_loaders.py --seconds 60 --seed 0

Takes the built-in template files and a small suite, mutates them at random (bytes, characters,
lines, Jinja and YAML tokens), loads each mutant and renders what loads. Every outcome must be a
value or a PromptkitError; anything else is printed with the input that caused it, and the exit
code is 1. Each attempt runs under a time limit, so a hang is a failure too.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

import promptkit as pk
from promptkit.paths import builtin_dir
from promptkit.tasks.core import Example, Task
from promptkit.tasks.suites import load_suite, load_tasks
from promptkit.prompts.templates import load_family
from promptkit.prompts.variants import expand

TOKENS = ["{{", "}}", "{%", "%}", "{#", "#}", "|", ":", "- ", "\n", "  ", "'", '"', "[", "]", "{", "}", "&a", "*a",
          "!!python/object/apply:os.system ['true']", "!!binary", "---", "...", "__class__", "loop", "range(99999)",
          "for x in choices", "endfor", "if", "endif", "input", "choices", "\x00", "\ufeff", "\udcff", "é", "9" * 40]
SUITE = ("name: fuzz\nlimit: 3\nselection:\n  - {name: a, source: files, path: a.jsonl, input: q, choices: opts, "
         "target: label}\nheld_out:\n  - {name: b, source: files, path: a.jsonl, input: q, choices: opts, target: label}\n")


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def mutate(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        i = rng.randint(0, len(text))
        if op == 0:
            text = text[:i] + rng.choice(TOKENS) + text[i:]
        elif op == 1:
            text = text[:i] + text[i + rng.randint(1, 12):]
        elif op == 2:
            text = text[:i] + chr(rng.randint(0, 0x2FF)) + text[i + 1:]
        elif op == 3:
            lines = text.splitlines(True)
            if lines:
                j = rng.randrange(len(lines))
                lines.insert(rng.randrange(len(lines) + 1), lines[j])
                text = "".join(lines)
        elif op == 4:
            j = rng.randint(0, len(text))
            text = text[:min(i, j)] + text[max(i, j):][::-1] if rng.random() < 0.1 else text[:i] + text[j:j + 20] + text[i:]
        else:
            text = text.replace(rng.choice(["'", ":", "{{", "\n", " "]), rng.choice(TOKENS), 1)
    return text


def attempt(kind: str, text: str, folder: Path) -> None:
    if kind == "template":
        path = folder / "mutant.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        family = load_family(path)
        task = Task("t", [Example("0", "Is it?", ["yes", "no"], 0)], instruction="Answer.")
        for variant in expand(family)[:4]:
            pk.render(variant, task, task.examples[0])
    else:
        path = folder / "suite.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        load_tasks(load_suite(path))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--max-cases", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--case-timeout", type=int, default=10)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    seeds = [("template", p.read_text()) for p in sorted(builtin_dir("templates").glob("*.yaml"))] + [("suite", SUITE)]
    signal.signal(signal.SIGALRM, _alarm)
    counts = {"loaded": 0, "refused": 0}
    failures = 0
    deadline = time.monotonic() + args.seconds
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "a.jsonl").write_text("\n".join(json.dumps({"q": f"q{i}", "opts": ["x", "y"], "label": i % 2}) for i in range(4)))
        attempt("suite", SUITE, folder)  # imports `datasets` and friends before any case is timed
        case = 0
        while case < args.max_cases and time.monotonic() < deadline:
            kind, base = rng.choice(seeds)
            text = mutate(base, rng)
            signal.alarm(args.case_timeout)
            try:
                attempt(kind, text, folder)
                counts["loaded"] += 1
            except pk.PromptkitError:
                counts["refused"] += 1
            except Hang:
                failures += 1
                print(f"case {case}: {kind} did not finish in {args.case_timeout} s:\n{text!r}\n", file=sys.stderr)
            except Exception:  # noqa: BLE001 - this is what the fuzzer looks for
                failures += 1
                print(f"case {case}: {kind} raised outside PromptkitError:\n{text!r}\n{traceback.format_exc()}", file=sys.stderr)
            finally:
                signal.alarm(0)
            case += 1
    print(f"fuzz_loaders: {case} mutants (seed {args.seed}): {counts['loaded']} loaded, {counts['refused']} refused "
          f"with a PromptkitError, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
