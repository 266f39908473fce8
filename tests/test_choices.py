"""Many choices: shared-prefix scoring packs a prompt's continuations into rows of bounded width (memory
linear in the number of choices); letter labels stay unique past Z; duplicate continuations are reported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from promptkit.backends.hf import forward as hf_compute
from promptkit.backends.hf import HFBackend

ROOT = Path(__file__).resolve().parents[1]


def test_many_continuations_score_as_one_pair_at_a_time(tiny_model, monkeypatch):
    prompt = "Question: Is the sky blue? Choose the correct answer from the options. Answer:"
    pairs = [(prompt, f" option {i} yes" if i % 3 else f" {i}") for i in range(300)] + [("Q: Is grass red? A:", " no")]
    backend = HFBackend(tiny_model, dtype="float32", device="cpu", batch_tokens=200)
    packings, items = [], []
    real_pack, real_score = hf_compute.pack_rows, backend._score_shared

    def pack(sizes, width):
        packings.append((sizes, real_pack(sizes, width)))
        return packings[-1][1]
    monkeypatch.setattr(hf_compute, "pack_rows", pack)
    monkeypatch.setattr(backend, "_score_shared", lambda batch: items.append(len(batch)) or real_score(batch))
    got = backend.loglikelihood(pairs)
    # the choices were split over several batches (the budget) and several rows per batch (the packing width)
    width = hf_compute.pack_width(backend)
    assert width == 50 and len(items) > 1 and any(len(rows) > 1 for _, rows in packings)
    for sizes, rows in packings:
        assert sorted(i for r in rows for i in r) == list(range(len(sizes)))
        assert all(len(r) == 1 or sum(sizes[i] for i in r) <= width for r in rows)
    reference = HFBackend(tiny_model, dtype="float32", device="cpu", share_prompts=False)
    for pair, x in zip(pairs, got):
        (y,) = reference.loglikelihood([pair])
        assert x.logprob == pytest.approx(y.logprob, abs=1e-5), pair
        assert (x.n_tokens, x.n_chars, x.is_greedy) == (y.n_tokens, y.n_chars, y.is_greedy)


def test_pack_rows_and_split_group_bound_the_width():
    assert hf_compute.pack_rows([], 4) == [[]]
    assert hf_compute.pack_rows([0, 0, 0], 1) == [[0, 1, 2]]
    assert hf_compute.pack_rows([2, 2, 1, 5, 1], 4) == [[0, 1], [2], [3], [4]]

    class Budget:
        batch_tokens = 40  # pack width 10
    chunks = hf_compute.split_group(Budget(), 5, [3] * 30)
    assert [i for c in chunks for i in c] == list(range(30))
    for c in chunks:  # the prompt once, its cache once per packed row, the continuations' tokens
        rows = hf_compute.pack_rows([2] * len(c), 10)
        assert 5 * (1 + len(rows)) + 3 * len(c) <= 40
    assert hf_compute.split_group(Budget(), 100, [3, 3]) == [[0], [1]]  # one continuation per chunk at least


def test_five_thousand_choices_fit_a_memory_cap(tiny_model):
    script = textwrap.dedent("""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        from promptkit.backends.hf import HFBackend
        backend = HFBackend(sys.argv[1], dtype="float32", device="cpu", batch_tokens=4096)
        pairs = [("Question: which option is right? Answer:", f" option {i}") for i in range(5000)]
        out = backend.loglikelihood(pairs)
        assert len(out) == 5000 and all(s is not None for s in out)
        print("peak-rss-mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    """)
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script, tiny_model], capture_output=True, text=True, timeout=600,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "peak-rss-mb" in done.stdout
    assert time.monotonic() - start < 300


def test_letter_labels_stay_unique_past_z():
    from promptkit.prompts.templates import _letter

    assert [_letter(i) for i in (0, 25, 26, 27, 51, 52, 701, 702)] == ["A", "Z", "AA", "AB", "AZ", "BA", "ZZ", "AAA"]
    assert len({_letter(i) for i in range(20_000)}) == 20_000


def test_thirty_choices_render_thirty_distinct_letter_continuations():
    import promptkit as pk
    from promptkit.prompts.render import render
    from promptkit.prompts.variants import expand
    from promptkit.tasks.core import Example, Task

    family = next(f for f in pk.load_templates() if f.name == "letter_answer")
    variant = next(v for v in expand(family) if v.values["label"] == "letters")
    example = Example("e0", "Which one?", [f"option {i}" for i in range(30)], 29)
    request = render(variant, Task("many", [example]), example)
    assert len(set(request.continuations)) == 30 and not request.duplicated
    assert request.continuations[26] == " AA" and "AD. option 29" in request.prompt


def test_duplicate_continuations_are_a_warning(tiny_model, tmp_path):
    import json

    import promptkit as pk

    rows = [{"q": f"Capital number {i}?", "opts": ["Paris", "Rome", "Paris"] if i < 2 else ["Paris", "Rome", "Berlin"],
             "label": 1, "uid": f"c{i}"} for i in range(4)]
    (tmp_path / "capitals.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: dup\nselection:\n"
                     "  - {name: capitals, source: files, path: capitals.jsonl, input: q, choices: opts, target: label, id: uid}\n")
    family = tmp_path / "plain.yaml"
    family.write_text("name: plain\naxes:\n  cue: ['Answer:', 'A:']\nprompt: 'Q: {{ input }} {{ cue }}'\n"
                      "continuation: ' {{ choice }}'\n")
    logged = []
    res = pk.evaluate(str(family), str(suite), tiny_model, cache=False, progress=False, log=logged.append)
    notes = [n for n in res.config["engine"]["notes"] if "same continuation" in n]
    assert len(notes) == 2  # one per variant × task
    assert all("task 'capitals': 2 of 4 example(s)" in n and "' Paris'" in n for n in notes)
    assert {n.split()[1] for n in notes} == set(res.to_pandas()["variant"])
    assert sum("same continuation" in line and line.startswith("warning: ") for line in logged) == 2
