"""The scoring engine: prefix sharing, batching, the result cache, out-of-memory back-off, resume after SIGKILL."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch

import promptkit as pk
from promptkit.engine import plan as engine
from promptkit.backends.hf import HFBackend
from promptkit.engine.cache import ResultCache, request_key
from promptkit.prompts.render import Request

DEMOS = ("Q: Is grass red? A: no\nQ: Is the sky blue? A: yes\nQ: two plus two Output: four\n"
         "Input: Paris London Berlin Madrid Rome Output: Paris\n")


def few_shot_pairs():
    questions = ["Is the cat on the mat?", "Capital number 3?", "Read the input and give the correct answer.", "x"]
    conts = [" yes", " no maybe", " Paris London Berlin", "Rome"]
    return [(DEMOS + f"Q: {q} A:", c) for q in questions for c in conts]


def test_shared_prefix_and_prompt_sharing_equal_unshared_scores(tiny_model):
    pairs = few_shot_pairs() + [("Question: short", " yes"), ("Completely different prompt here", " no")]
    shared = HFBackend(tiny_model, dtype="float32", device="cpu", batch_tokens=100_000)
    unshared = HFBackend(tiny_model, dtype="float32", device="cpu", share_prompts=False, batch_tokens=100_000)
    a, b = shared.loglikelihood(pairs), unshared.loglikelihood(pairs)
    for (p, c), x, y in zip(pairs, a, b):
        assert x.logprob == pytest.approx(y.logprob, abs=1e-5), (p, c)
        assert (x.n_tokens, x.n_chars, x.is_greedy) == (y.n_tokens, y.n_chars, y.is_greedy)
    prefix_tokens = len(shared.tokenizer(DEMOS)["input_ids"])
    assert prefix_tokens > 20
    # the demonstrations ran once, not once per example (and not once per choice)
    assert shared.forward_tokens < unshared.forward_tokens - 3 * 4 * (prefix_tokens - 2)


def test_projected_rows_count_each_scored_position_once(tiny_model):
    """A prompt's continuations are all predicted from its last position: that position is projected onto the
    vocabulary once, plus one position per further continuation token (benchmarks count FLOPs from this)."""
    pairs = few_shot_pairs()
    backend = HFBackend(tiny_model, dtype="float32", device="cpu", batch_tokens=100_000)
    scores = backend.loglikelihood(pairs)
    prompts = {p for p, _ in pairs}
    want = len(prompts) + sum(len(backend.encode(p, c)[1]) - 1 for p, c in pairs)
    assert backend.projected_rows == want < sum(s.n_tokens for s in scores)


def test_order_and_budget_do_not_change_results(tiny_model):
    pairs = few_shot_pairs()
    big = HFBackend(tiny_model, dtype="float32", device="cpu", batch_tokens=100_000).loglikelihood(pairs)
    small = HFBackend(tiny_model, dtype="float32", device="cpu", batch_tokens=40).loglikelihood(pairs[::-1])[::-1]
    for x, y in zip(big, small):
        assert x.logprob == pytest.approx(y.logprob, abs=1e-5)


@pytest.mark.parametrize("kernel, options", [("_score_packed", {}), ("_score_shared", {"pack_prompts": False})])
def test_out_of_memory_halves_the_batch_instead_of_failing(tiny_model, monkeypatch, kernel, options):
    backend = HFBackend(tiny_model, dtype="float32", device="cpu", batch_tokens=100_000, **options)
    reference = backend.loglikelihood(few_shot_pairs())
    real = getattr(backend, kernel)

    def fussy(items):
        if len(items) > 1:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 123 bytes")
        return real(items)

    # one tree per prompt (no shared prefix to gain), so that the packed kernel gets a batch of several
    monkeypatch.setattr(backend, "min_shared_prefix", 10_000)
    monkeypatch.setattr(backend, kernel, fussy)
    again = backend.loglikelihood(few_shot_pairs())
    assert backend.backoffs > 0 and backend.batch_tokens < 100_000
    assert [s.logprob for s in again] == pytest.approx([s.logprob for s in reference], abs=1e-5)

    def broken(items):
        raise RuntimeError("some other failure")

    monkeypatch.setattr(backend, kernel, broken)
    with pytest.raises(RuntimeError, match="some other failure"):
        backend.loglikelihood(few_shot_pairs())


def test_cache_hit_is_identical_and_other_fingerprints_miss(tiny_model, tmp_path):
    backend = HFBackend(tiny_model, dtype="float32", device="cpu")
    requests = [Request("v", "t", str(i), p, (c,)) for i, (p, c) in enumerate(few_shot_pairs())]
    store = ResultCache(tmp_path / "c.sqlite", backend.fingerprint)
    first_stats, second_stats = engine.EngineStats(), engine.EngineStats()
    first = engine.score(requests, backend, progress=False, cache=store, stats=first_stats)
    second = engine.score(requests, backend, progress=False, cache=store, stats=second_stats)
    assert first_stats.computed == len(requests) and first_stats.cache_hits == 0
    assert second_stats.cache_hits == len(requests) and second_stats.computed == 0 and second_stats.forward_tokens == 0
    assert [s[0] for s in first] == [s[0] for s in second]  # identical, not just close
    other = ResultCache(tmp_path / "c.sqlite", "another-model")
    assert other.get_many([request_key(p, c) for p, c in few_shot_pairs()]) == {}


@pytest.mark.parametrize("remembered", [False, True], ids=["hashed-again", "digest-remembered-like-a-large-file"])
def test_fingerprint_tracks_weights_dtype_and_tokenizer(tiny_model, tmp_path, monkeypatch, remembered):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from promptkit.backends import acquire

    if remembered:  # the tiny model's files are small; a real model's digests are remembered by size and mtime
        monkeypatch.setattr(acquire, "REMEMBER_BYTES", 0)
        monkeypatch.setenv("PROMPTKIT_CACHE", str(tmp_path / "cache"))

    base = HFBackend(tiny_model, dtype="float32", device="cpu")
    assert HFBackend(tiny_model, dtype="float32", device="cpu").fingerprint == base.fingerprint
    assert HFBackend(tiny_model, dtype="bfloat16", device="cpu").fingerprint != base.fingerprint
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight.mul_(1.01)  # a 'fine-tune' of one matrix
    model.save_pretrained(tmp_path / "tuned")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tmp_path / "tuned")
    assert HFBackend(str(tmp_path / "tuned"), dtype="float32", device="cpu").fingerprint != base.fingerprint


def test_the_backend_knows_its_model_from_the_files_and_loads_it_only_to_score(tiny_model, tmp_path):
    import shutil

    from transformers import AutoTokenizer

    backend = HFBackend(tiny_model, dtype="float32", device="cpu")
    info = backend.describe()
    assert backend._model is None and backend._tokenizer is None  # fingerprint and description come from the files
    assert info["class"] == "LlamaForCausalLM" and info["dtype"] == "float32" and info["device"] == "cpu"
    assert backend.loglikelihood([]) == [] and backend._model is None
    scores = backend.loglikelihood([("Q: what is 2+2?\nA:", " 4")])
    assert backend._model is not None and len(scores) == 1 and scores[0].logprob < 0
    assert info["parameters"] == sum(p.numel() for p in backend.model.parameters())
    assert backend.describe() == info  # the same record whether or not the weights were loaded
    # the same files elsewhere are the same model; another tokenizer is another model
    shutil.copytree(tiny_model, tmp_path / "copy")
    assert HFBackend(str(tmp_path / "copy"), dtype="float32", device="cpu").fingerprint == backend.fingerprint
    tok = AutoTokenizer.from_pretrained(tiny_model)
    tok.add_tokens(["<extra>"])
    tok.save_pretrained(tmp_path / "copy")
    assert HFBackend(str(tmp_path / "copy"), dtype="float32", device="cpu").fingerprint != backend.fingerprint
    backend.close()
    with pytest.raises(pk.PromptkitError, match="released"):
        backend.loglikelihood([("Q:", " 4")])


def test_a_damaged_safetensors_header_is_a_clear_error_before_anything_runs(tiny_model, tmp_path):
    import shutil

    shutil.copytree(tiny_model, tmp_path / "bad")
    weights = tmp_path / "bad" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:16] = b"not json"
    weights.write_bytes(bytes(data))
    with pytest.raises(pk.PromptkitError, match="model.safetensors.*damaged"):
        HFBackend(str(tmp_path / "bad"), dtype="float32", device="cpu")


def test_corrupt_cache_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(pk.PromptkitError, match="--no-cache"):
        ResultCache(bad, "fp")


RUNNER = """
import sys, promptkit as pk
res = pk.evaluate(sys.argv[1], sys.argv[2], sys.argv[3], cache=sys.argv[4], batch_tokens=48, progress=False)
res.to_pandas().to_json(sys.argv[5], orient="records", lines=True)
print("engine", res.config["engine"])
"""


def test_killed_run_resumes_from_the_cache(tiny_model, toy_suite, two_templates, tmp_path):
    import pandas as pd

    reference = pk.evaluate(two_templates, toy_suite, tiny_model, cache=False, batch_tokens=48, progress=False).to_pandas()
    db = tmp_path / "kill.sqlite"
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    args = [sys.executable, str(script), str(two_templates), str(toy_suite), tiny_model, str(db), str(tmp_path / "out.jsonl")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    rows = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as con:
                    rows = con.execute("SELECT COUNT(*) FROM loglikelihood").fetchone()[0]
            except sqlite3.OperationalError:
                rows = 0
            if rows > 0:
                break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed; make the workload bigger"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    with sqlite3.connect(db) as con:
        kept = con.execute("SELECT COUNT(*) FROM loglikelihood").fetchone()[0]
    assert 0 < kept
    resumed = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    stats = resumed.stdout.split("engine", 1)[1]
    assert f"'cache_hits': {kept}" in stats
    after = pd.read_json(tmp_path / "out.jsonl", orient="records", lines=True, dtype={"example": str})
    assert len(after) == len(reference)
    assert after["prediction"].tolist() == reference["prediction"].tolist()
    for x, y in zip(after["logprobs"], reference["logprobs"]):
        assert x == pytest.approx(y, abs=1e-5)


def test_attended_keys_are_counted_with_and_without_a_window():
    from promptkit.backends.hf.context import _keys_seen

    for past in range(0, 12):
        for n in range(0, 9):
            for window in (None, 1, 5, 8, 30):
                expected = sum(min(k, window) if window else k for k in range(past + 1, past + n + 1))
                assert _keys_seen(past, n, window) == expected, (past, n, window)


@pytest.mark.parametrize("cap", [None, 3.0])
def test_sliced_vocabulary_projection_equals_full_log_softmax(tiny_backend, monkeypatch, cap):
    """The projection walks the vocabulary in slices (running log-sum-exp and argmax); it must
    give what one full log_softmax gives, for targets in every slice, and the first maximum on ties."""
    monkeypatch.setattr(tiny_backend.model.config, "final_logit_softcapping", cap, raising=False)
    head = tiny_backend.model.get_output_embeddings()
    vocab, hidden = head.weight.shape
    torch.manual_seed(0)
    vectors = torch.randn(9, hidden)
    logits = head(vectors).float()
    if cap:
        logits = torch.tanh(logits / cap) * cap
    targets = torch.tensor([0, vocab - 1, 5, vocab // 2, *logits.argmax(1)[4:].tolist()])
    want = torch.log_softmax(logits, -1).gather(1, targets[:, None])[:, 0]
    for chunk in (7, vocab // 3, vocab, 10 * vocab):
        lp, greedy = tiny_backend._project(vectors, targets, chunk=chunk)
        assert torch.allclose(lp, want, atol=1e-5), chunk
        assert greedy.tolist() == (logits.argmax(1) == targets).tolist()
        assert greedy[4:].all()
    # logits given directly (a model without a separate head), with a tie: the first index wins
    tied = torch.zeros(2, 10)
    tied[:, 3] = tied[:, 8] = 5.0
    lp, greedy = tiny_backend._project(tied, torch.tensor([3, 8]), is_logits=True, chunk=4)
    assert greedy.tolist() == [True, False]
    assert torch.allclose(lp, torch.log_softmax(tied, -1)[:, 3])
    # the argmax is taken only where a row's maximum rises: rows rising in different slices, a tie across slices,
    # the maximum in the last (short) slice, and a row that never rises after the first slice
    logits = torch.zeros(4, 11)
    logits[0, [1, 9]] = 2.0            # tie: the first slice's index wins
    logits[1, 1], logits[1, 6] = 1.0, 3.0  # rises in the second slice
    logits[2, 5], logits[2, 10] = 1.0, 4.0  # rises in the second, then again in the last slice
    logits[3, 0] = 7.0                 # never rises again
    argmax = logits.argmax(1)
    for targets in (argmax, torch.tensor([9, 1, 5, 10])):
        lp, greedy = tiny_backend._project(logits, targets, is_logits=True, chunk=4)
        assert greedy.tolist() == (argmax == targets).tolist()
        assert torch.allclose(lp, torch.log_softmax(logits, -1).gather(1, targets[:, None])[:, 0], atol=1e-6)


def test_bf16_mixed_rounds_only_the_matrix_products(tiny_model, tmp_path):
    """bf16-mixed: the layers' linear maps and the bulk of the vocabulary projection in bfloat16, the rest float32;
    answers close to float32's, its own cache key."""
    pairs = [(f"Question {i}: is {i} even?\nAnswer:", c) for i in range(6) for c in (" yes", " no", " it is not")]
    full = HFBackend(tiny_model, dtype="float32", device="cpu")
    mixed = HFBackend(tiny_model, dtype="bf16-mixed", device="cpu")
    assert mixed.fingerprint != full.fingerprint and mixed.describe()["dtype"] == "bf16-mixed"
    a, b = full.loglikelihood(pairs), mixed.loglikelihood(pairs)
    model = mixed.model
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not model.get_output_embeddings()]
    assert linear and all(m.weight.dtype == torch.bfloat16 for m in linear)
    # the output matrix stays float32 (the exact top logits and targets); its product uses a bfloat16 copy (test_project.py)
    assert model.get_output_embeddings().weight.dtype == torch.float32 and mixed._head16.dtype == torch.bfloat16
    assert model.get_input_embeddings().weight.dtype == torch.float32
    diffs = [abs(x.logprob - y.logprob) for x, y in zip(a, b)]
    assert 0 < max(diffs) < 0.05, diffs  # rounded, so not identical, but close
    assert not torch.is_autocast_enabled("cpu")  # the context ends with the call
    out = mixed.generate([("Question 1: is 1 even?\nAnswer:", ("\n",), 4)])
    assert len(out) == 1 and out[0].n_tokens <= 4


def test_auto_dtype_is_bf16_mixed_only_on_a_cpu_with_bf16_instructions(tmp_path, monkeypatch):
    from promptkit.backends.hf import setup as hf_setup

    with_bf16, without = tmp_path / "epyc", tmp_path / "old"
    with_bf16.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n")
    without.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert hf_setup.cpu_has_bf16(str(with_bf16)) and not hf_setup.cpu_has_bf16(str(without))
    assert not hf_setup.cpu_has_bf16(str(tmp_path / "absent"))  # not Linux: float32
    monkeypatch.setattr(hf_setup, "cpu_has_bf16", lambda: True)
    assert hf_setup.dtype_name("auto", "cpu") == "bf16-mixed" and hf_setup.dtype_name("float32", "cpu") == "float32"
    monkeypatch.setattr(hf_setup, "cpu_has_bf16", lambda: False)
    assert hf_setup.dtype_name("auto", "cpu") == "float32"
    with pytest.raises(pk.PromptkitError, match="bf16-mixed"):
        hf_setup.dtype_name("float8", "cpu")



ALLOC_CYCLES = """
import json, resource, sys, torch
from promptkit.backends.hf import HFBackend
if sys.argv[1] != "-":
    HFBackend(sys.argv[1], dtype="float32", device="cpu").load_weights()
from promptkit.backends.hf import setup as hf_setup

def batch():  # a batch's activations: blocks of 4 to 24 MiB held through the forward, then freed
    held = [torch.empty(n << 20).fill_(1.0) for n in range(1, 7)]

batch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    batch()
print(json.dumps({"tuned": hf_setup._malloc_tuned, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


@pytest.mark.parametrize("env", [{}, {"PROMPTKIT_MALLOC": "system"}, {"MALLOC_ARENA_MAX": "2"}], ids=["tuned", "opt-out", "user-set"])
def test_loading_on_cpu_keeps_freed_activation_memory_for_the_next_batch(tiny_model, env):
    """glibc returns blocks above its (adaptive) mmap threshold and heap tops above twice it to the system on free,
    so a batch's activations could come as fresh pages the kernel faults in and zeroes (the few-shot benchmark:
    260,000-720,000 faults). Loading a model on CPU makes glibc keep blocks up to 32 MiB, unless the user chose how
    memory is allocated; then nothing is changed."""
    import platform

    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("PROMPTKIT_MALLOC", "LD_PRELOAD", "GLIBC_TUNABLES")}
    runs = {}
    for model in (tiny_model, "-"):
        out = subprocess.run([sys.executable, "-c", ALLOC_CYCLES, model], env={**base, **env}, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        runs[model] = json.loads(out.stdout.strip().splitlines()[-1])
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert runs["-"]["tuned"] is None  # nothing changes until a model is loaded
    assert runs[tiny_model]["tuned"] is (glibc and not env)
    if runs[tiny_model]["tuned"]:
        assert runs[tiny_model]["faults"] < 21504  # ten batches of 84 MiB (21,504 pages each), on pages already there


def test_an_edit_of_a_block_between_any_two_sampled_pieces_is_another_model(tmp_path, monkeypatch):
    """A pruned head or ablated neurons change one contiguous block of a large tensor; a fingerprint that samples
    pieces of each tensor missed it and served stale scores. The whole file counts (its digest remembered by size,
    modification time and inode)."""
    from safetensors.torch import save_file

    from promptkit.backends import acquire

    monkeypatch.setenv("PROMPTKIT_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "model"
    folder.mkdir()
    weights = torch.arange(18 << 20, dtype=torch.float32)  # 72 MiB: over the old whole-file limit of 64 MiB
    save_file({"w": weights}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text("{}")
    before, parameters = acquire.files_fingerprint(folder)
    assert parameters == 18 << 20
    assert acquire.files_fingerprint(folder)[0] == before  # the remembered digest: same answer
    remembered = json.loads((tmp_path / "cache" / acquire.DIGESTS_FILE).read_text())
    assert list(remembered.values()) == [acquire._sha256(folder / "model.safetensors")]
    size = (folder / "model.safetensors").stat().st_size
    with open(folder / "model.safetensors", "r+b") as f:  # zero 64 KiB between the 1st and 2nd of 16 sampled pieces
        f.seek(size // 30)
        f.write(bytes(64 << 10))
    assert acquire.files_fingerprint(folder)[0] != before


def test_the_progress_bar_starts_after_the_model_has_loaded(tiny_model, monkeypatch):
    """The bar showed 'scoring 0%' for as long as the weights took to load (they load on first use)."""
    events = []
    backend = HFBackend(tiny_model, dtype="float32", device="cpu")
    real_load = backend.load_weights
    monkeypatch.setattr(backend, "load_weights", lambda: events.append("load") or real_load())

    class Bar:
        def __init__(self, *args, **kwargs):
            events.append("bar")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n=1):
            pass

    monkeypatch.setattr(engine, "tqdm", Bar)
    requests = [Request("v", "t", "0", "Q: 1+1?\nA:", (" 2", " 3"))]
    engine.score(requests, backend, progress=True)
    assert events[:2] == ["load", "bar"]
