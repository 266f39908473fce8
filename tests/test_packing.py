"""Packed scoring (score_packed): prompts, their shared prefixes and their continuations packed as trees into rows
with a 4D mask must give exactly what one unshared row per (prompt + continuation) gives: on a full-attention
model, on a model with sliding-window layers whose prompts run past the window, and with a projection row shared
by all first tokens of a prompt."""

from __future__ import annotations

import pytest
import torch

from conftest import train_tokenizer
from promptkit.backends import hf_attention, hf_packing
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
    """Attention by blocks of `block` queries (hf_attention.py; 10**6: never); the spans it computed, to check it ran."""
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


def test_rows_are_filled_first_fit_and_batches_keep_similar_widths():
    assert hf_packing.fill_rows([5, 3, 4, 2, 1], 6) == [[0, 4], [2, 3], [1]]
    assert hf_packing.fill_rows([9], 4) == [[0]]  # a larger segment gets a row of its own
    sizes = [700, 680, 400, 390, 100, 90, 30]
    batches = list(hf_packing.packed_batches(sizes, lambda n: n, width=256, budget=2000))
    # 400 would leave rows of 700 half empty; the small trees share rows of the packing width
    assert batches == [[700, 680], [400, 390], [100, 90, 30]]
    assert list(hf_packing.packed_batches([300] * 5, lambda n: n, width=256, budget=700)) == [[300, 300]] * 2 + [[300]]


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
