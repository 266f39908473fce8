"""Attention by blocks of queries for packed rows (backends/hf/attention.py): the spans of keys each block may see,
and the scope of the override of transformers' `sdpa` function."""

from __future__ import annotations

import pytest
import torch

from promptkit.backends.hf import attention as hf_attention
from promptkit.backends.hf import HFBackend


def additive(allowed: torch.Tensor) -> torch.Tensor:
    bias = torch.zeros(allowed.shape)
    bias.masked_fill_(~allowed, torch.finfo(torch.float32).min)
    return bias[:, None]


def test_key_spans_cover_exactly_the_keys_a_block_may_see(monkeypatch):
    monkeypatch.setattr(hf_attention, "BLOCK", 4)
    monkeypatch.setattr(hf_attention, "KEYS", 2)
    # one row: a causal tree of 6 tokens, then one of 6 tokens that sees only itself; a second row: causal over 12
    first = torch.zeros(12, 12, dtype=torch.bool)
    first[:6, :6] = torch.ones(6, 6, dtype=torch.bool).tril()
    first[6:, 6:] = torch.ones(6, 6, dtype=torch.bool).tril()
    assert hf_attention.key_spans(additive(first[None])) == [(0, 4, slice(0, 4)), (4, 8, slice(0, 8)), (8, 12, slice(6, 12))]
    both = torch.stack([first, torch.ones(12, 12, dtype=torch.bool).tril()])
    assert [k for _, _, k in hf_attention.key_spans(additive(both))] == [slice(0, 4), slice(0, 8), slice(0, 12)]  # any row
    # a tree: a prefix (0-3) and two prompts (4-7, 8-11) that see the prefix and themselves, not each other
    tree = torch.zeros(12, 12, dtype=torch.bool)
    for lo, hi in ((0, 4), (4, 8), (8, 12)):
        tree[lo:hi, lo:hi] = torch.ones(hi - lo, hi - lo, dtype=torch.bool).tril()
    tree[4:, :4] = True
    spans = hf_attention.key_spans(additive(tree[None]))
    assert spans[1][2] == slice(0, 8)  # prefix and own prompt: contiguous
    assert spans[2][2].tolist() == [0, 1, 2, 3, 8, 9, 10, 11]  # the other prompt's keys are not gathered


def test_the_override_is_scoped_and_undone_after_an_error(tiny_model):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    model = HFBackend(tiny_model, dtype="float32", device="cpu").model
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is sdpa_attention_forward
    with hf_attention.blocked(model):
        assert ALL_ATTENTION_FUNCTIONS["sdpa"] is not sdpa_attention_forward
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is sdpa_attention_forward
    with pytest.raises(RuntimeError), hf_attention.blocked(model):
        raise RuntimeError("a failed forward")
    assert ALL_ATTENTION_FUNCTIONS["sdpa"] is sdpa_attention_forward
    model.config._attn_implementation_internal = "eager"  # a model that does not attend through sdpa: untouched
    try:
        with hf_attention.blocked(model):
            assert ALL_ATTENTION_FUNCTIONS["sdpa"] is sdpa_attention_forward
    finally:
        model.config._attn_implementation_internal = "sdpa"


@pytest.mark.parametrize("keys", [64, 2])  # keys as spans; or, in pieces of 2, the last block's keys gathered
def test_blocked_attention_equals_the_dense_call(tiny_model, monkeypatch, keys):
    """One attention call on a packed mask: by blocks of 4 queries, each block's grouped query heads folded into
    one head per key/value head = the dense call, to float rounding."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    monkeypatch.setattr(hf_attention, "BLOCK", 4)
    monkeypatch.setattr(hf_attention, "KEYS", keys)
    model = HFBackend(tiny_model, dtype="float32", device="cpu").model
    module = model.model.layers[0].self_attn  # grouped heads: 4 query heads, 2 key/value heads
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 13, 8), torch.randn(2, 2, 13, 8), torch.randn(2, 2, 13, 8)
    allowed = torch.ones(13, 13, dtype=torch.bool).tril()
    allowed[7:, :5] = False  # the second tree of each row does not see the first
    allowed[11:, 7:11] = False  # and in it a second prompt (11-12) sees the tree's prefix (5-6), not the first (7-10)
    mask = additive(allowed.expand(2, 13, 13).clone())
    assert any(not isinstance(k, slice) for _, _, k in hf_attention.key_spans(mask)) == (keys == 2)
    want = sdpa_attention_forward(module, q, k, v, mask, scaling=0.3)[0]
    with hf_attention.blocked(model):
        got = ALL_ATTENTION_FUNCTIONS["sdpa"](module, q, k, v, mask, scaling=0.3)[0]
    assert got.shape == want.shape and torch.allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("keep", [256 << 20, 0])  # block masks kept for the next layer; or none kept
def test_layers_reading_one_mask_reuse_its_block_masks_and_stay_exact(tiny_model, monkeypatch, keep):
    """Two layers read the same packed mask: the second reuses the first's block masks (cut to each block's keys,
    repeated for the folded heads) while they fit in KEEP_BYTES, and both equal the dense call."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    monkeypatch.setattr(hf_attention, "BLOCK", 4)
    monkeypatch.setattr(hf_attention, "KEYS", 2)
    monkeypatch.setattr(hf_attention, "KEEP_BYTES", keep)
    model = HFBackend(tiny_model, dtype="float32", device="cpu").model
    module = model.model.layers[0].self_attn  # 4 query heads, 2 key/value heads: folded
    allowed = torch.ones(13, 13, dtype=torch.bool).tril()
    allowed[7:, :5] = False
    allowed[11:, 7:11] = False
    mask = additive(allowed.expand(2, 13, 13).clone())
    repeats, real = [], torch.Tensor.repeat
    monkeypatch.setattr(torch.Tensor, "repeat", lambda t, *a: repeats.append(a) or real(t, *a))
    torch.manual_seed(0)
    layers = [(torch.randn(2, 4, 13, 8), torch.randn(2, 2, 13, 8), torch.randn(2, 2, 13, 8)) for _ in range(2)]
    with hf_attention.blocked(model):
        got = [ALL_ATTENTION_FUNCTIONS["sdpa"](module, q, k, v, mask, scaling=0.3)[0] for q, k, v in layers]
    blocks = len(hf_attention.key_spans(mask))
    assert len(repeats) == (blocks if keep else 2 * blocks)  # a block's mask is made once, or once per layer
    for (q, k, v), out in zip(layers, got):
        assert torch.allclose(out, sdpa_attention_forward(module, q, k, v, mask, scaling=0.3)[0], atol=1e-6)
