"""Packed scoring (score_packed): prompts, their shared prefixes and their continuations packed as trees into rows
with a 4D mask must give exactly what one unshared row per (prompt + continuation) gives: on a full-attention
model, on a model with sliding-window layers whose prompts run past the window, and with a projection row shared
by all first tokens of a prompt."""

from __future__ import annotations

import pytest
import torch

from conftest import train_tokenizer
from promptkit.backends.hf import attention as hf_attention, packing as hf_packing
from promptkit.backends.hf import HFBackend

INSTRUCTION = "Read the input and give the correct answer. Choose the correct answer from the options. "


def mixed_pairs() -> list[tuple[str, str]]:
    """Lone prompts, a cluster of prompts behind one long instruction, one- and many-token continuations,
    one prompt with many continuations."""
    pairs = [("Question: Is the sky blue? Answer:", c) for c in (" yes", " no", " maybe not today")]
    pairs += [("Q: Is grass red? A:", " no"), ("Input: two plus two Output:", " four"), ("x", " Paris London")]
    pairs += [(INSTRUCTION + f"Q: item {i} A:", c) for i in range(5) for c in (" A", " B", " the cat sat on the mat")]
    pairs += [("Options: A. yes B. no C. maybe", f" option {i} of many") for i in range(12)]
    return pairs


def assert_same(a, b, pairs, tol=1e-5):
    for (p, c), x, y in zip(pairs, a, b):
        assert x.logprob == pytest.approx(y.logprob, abs=tol), (p, c)
        assert (x.n_tokens, x.n_chars, x.is_greedy) == (y.n_tokens, y.n_chars, y.is_greedy), (p, c)


def blocks(monkeypatch, block: int) -> list:
    """Attention by blocks of `block` queries (hf/attention.py; 10**6: never); the spans it computed, to check it ran."""
    monkeypatch.setattr(hf_attention, "BLOCK", block)
    seen, real = [], hf_attention.key_spans
    monkeypatch.setattr(hf_attention, "key_spans", lambda mask: seen.append(real(mask)) or seen[-1])
    return seen


@pytest.mark.parametrize("block", [4, 10**6])
def test_packed_trees_equal_unshared_rows(tiny_model, monkeypatch, block):
    pairs = mixed_pairs()
    spans = blocks(monkeypatch, block)
    packed = HFBackend(tiny_model, dtype="float32", device="cpu", batch_tokens=300)
    unshared = HFBackend(tiny_model, dtype="float32", device="cpu", share_prompts=False)
    calls = []
    real = packed._score_packed
    monkeypatch.setattr(packed, "_score_packed", lambda trees: calls.append(len(trees)) or real(trees))
    assert_same(packed.loglikelihood(pairs), unshared.loglikelihood(pairs), pairs)
    assert calls and sum(calls) < len({p for p, _ in pairs})  # the instruction cluster became one tree
    # each prompt ran once (the cluster's instruction once), not once per continuation
    assert packed.forward_tokens < unshared.forward_tokens / 2
    # with small blocks, attention ran by blocks, and some block skipped keys (above the diagonal, earlier trees)
    assert bool(spans) == (block == 4)
    seen = [(k.stop - k.start if isinstance(k, slice) else len(k), b) for s in spans for _, b, k in s]
    assert block != 4 or any(n < b for n, b in seen)  # a block saw fewer keys than all before it (earlier trees)


def test_the_cached_passes_still_serve_groups_too_large_to_pack(tiny_model):
    """A prompt with more continuation tokens than a batch holds goes through split_group and the cached passes."""
    pairs = [("Options: A. yes B. no C. maybe", f" option {i} of many the cat sat") for i in range(30)]
    small = HFBackend(tiny_model, dtype="float32", device="cpu", batch_tokens=64)
    unshared = HFBackend(tiny_model, dtype="float32", device="cpu", share_prompts=False)
    assert_same(small.loglikelihood(pairs), unshared.loglikelihood(pairs), pairs)


@pytest.fixture(scope="module")
def tiny_sliding_model(tmp_path_factory) -> str:
    """A Gemma 3 text model with a sliding window of 6 tokens on every other layer (as the 270M model has 512)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    folder = tmp_path_factory.mktemp("tiny-gemma3")
    fast = train_tokenizer(["<pad>", "<bos>", "<eos>", "<unk>"], "<bos> $A", bos_token="<bos>", eos_token="<eos>",
                           pad_token="<pad>", unk_token="<unk>")
    config = Gemma3TextConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=8, max_position_embeddings=256,
                              sliding_window=6, layer_types=["sliding_attention", "full_attention"],
                              bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("block", [4, 10**6])
def test_packed_trees_past_the_sliding_window_equal_unshared_rows(tiny_sliding_model, monkeypatch, block):
    pairs = mixed_pairs()
    spans = blocks(monkeypatch, block)
    packed = HFBackend(tiny_sliding_model, dtype="float32", device="cpu")
    unshared = HFBackend(tiny_sliding_model, dtype="float32", device="cpu", share_prompts=False)
    assert packed.window == 6 and packed.sliding_masks and packed.pack_depth == 256
    assert len(packed.tokenizer(INSTRUCTION)["input_ids"]) > 3 * packed.window
    reference = unshared.loglikelihood(pairs)
    assert_same(packed.loglikelihood(pairs), reference, pairs)
    assert bool(spans) == (block == 4)
    # the sliding layers' own mask is what makes this exact: one mask for both layer types is not
    monkeypatch.setattr(packed, "sliding_masks", False)
    wrong = packed.loglikelihood(pairs)
    assert max(abs(x.logprob - y.logprob) for x, y in zip(wrong, reference)) > 1e-3


def test_first_tokens_of_a_prompt_share_one_projection_row(tiny_backend):
    head = tiny_backend.model.get_output_embeddings()
    torch.manual_seed(1)
    vectors = torch.randn(3, head.weight.shape[1])
    rows = torch.tensor([0, 0, 0, 1, 2, 2])
    targets = torch.tensor([5, 9, 11, 5, 0, 7])
    lp, greedy = tiny_backend._project(vectors, targets, rows=rows, chunk=50)
    full = torch.log_softmax(head(vectors[rows]).float(), -1)
    assert torch.allclose(lp, full.gather(1, targets[:, None])[:, 0], atol=1e-5)
    assert greedy.tolist() == (full.argmax(1) == targets).tolist()


def test_rows_and_batches_are_filled_first_fit_in_decreasing_size():
    assert hf_packing.fill_rows([5, 3, 4, 2, 1], 6) == [[0, 4], [2, 3], [1]]
    assert hf_packing.fill_rows([9], 4) == [[0]]  # a larger segment gets a row of its own
    # batches are filled like rows (score_packed then packs a batch into as few rows as it can, without padding,
    # so a small tree may join a large one): a budget of 2,000 holds the seven trees in two batches (the old rule,
    # rows of similar width, made three)
    sizes = [700, 680, 400, 390, 100, 90, 30]
    batches = hf_packing.packed_batches(sizes, lambda n: n, budget=2000)
    assert batches == [[700, 680, 400, 100, 90, 30], [390]]
    assert all(sum(b) <= 2000 for b in batches)
    assert hf_packing.packed_batches([300] * 5, lambda n: n, budget=700) == [[300, 300]] * 2 + [[300]]


def test_a_batch_of_unequal_trees_runs_in_one_row_without_padding(tiny_model, monkeypatch):
    """Rows used to be as wide as a batch's largest tree, so trees of unequal size left padding at the end of
    each row (12.6% of the token slots on the benchmark's few-shot workload); now a batch that fits in one row
    runs as one row with no padding, and gives what unshared rows give."""
    pairs = mixed_pairs()
    packed = HFBackend(tiny_model, dtype="float32", device="cpu", batch_tokens=4096)
    unshared = HFBackend(tiny_model, dtype="float32", device="cpu", share_prompts=False)
    shapes, real = [], packed.model.base_model.forward
    monkeypatch.setattr(packed.model.base_model, "forward",
                        lambda *a, **k: shapes.append(tuple(k["input_ids"].shape)) or real(*a, **k))
    assert_same(packed.loglikelihood(pairs), unshared.loglikelihood(pairs), pairs)
    assert shapes == [(1, packed.forward_tokens)]  # one row, every slot a real token


def test_groups_wider_than_the_widest_packed_row_take_the_other_paths(tiny_model, monkeypatch):
    """A packed row's masks grow with its width squared, so a prompt group wider than MAX_TREE is not packed."""
    pairs = mixed_pairs()
    monkeypatch.setattr(hf_packing, "MAX_TREE", 24)
    packed = HFBackend(tiny_model, dtype="float32", device="cpu")
    widths = []
    real = packed._score_packed
    monkeypatch.setattr(packed, "_score_packed", lambda trees: widths.extend(
        hf_packing.tree_size([c for c, _ in t], [x for _, x in t], hf_packing.shared_prefix(packed, [c for c, _ in t]))
        for t in trees) or real(trees))
    unshared = HFBackend(tiny_model, dtype="float32", device="cpu", share_prompts=False)
    assert_same(packed.loglikelihood(pairs), unshared.loglikelihood(pairs), pairs)
    assert widths and max(widths) <= 24


def test_sliding_layers_share_the_full_mask_when_no_tree_reaches_past_the_window():
    """Building a second mask for a 4,096-token row costs ~0.1 s; it is built only when some key is further back
    than the window, and then cuts exactly those keys."""
    import types

    allowed = torch.ones(6, 6, dtype=torch.bool).tril()[None]
    pos = torch.arange(6)[None]
    low = torch.finfo(torch.float32).min
    shallow = hf_packing._attention_masks(types.SimpleNamespace(dtype=torch.float32, device="cpu", sliding_masks=True,
                                                                window=6), allowed, pos)
    assert shallow["sliding_attention"] is shallow["full_attention"]
    assert torch.equal(shallow["full_attention"][0, 0] == 0, allowed[0])
    deep = hf_packing._attention_masks(types.SimpleNamespace(dtype=torch.float32, device="cpu", sliding_masks=True,
                                                             window=3), allowed, pos)
    assert torch.equal(deep["full_attention"], shallow["full_attention"])
    open_keys = deep["sliding_attention"][0, 0] > low / 2
    assert open_keys[5].tolist() == [False, False, False, True, True, True]  # the window's 3 keys: 3, 4 and itself
    assert torch.equal(open_keys, allowed[0] & (pos[0][:, None] - pos[0][None] < 3))
