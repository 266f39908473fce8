"""bf16-mixed's vocabulary projection (backends/hf/project.py): a bfloat16 product with a per-row shift, the largest
logits and the targets taken again in float32. It must stay close to the float32 projection where a plain bfloat16
product is not (logits of large magnitude), on peaked and flat rows, targets in every slice, and unlikely targets."""

from __future__ import annotations

import pytest
import torch

from promptkit.backends.hf import project as hf_project
from promptkit.backends.hf import HFBackend


@pytest.fixture(scope="module")
def mixed(tiny_model):
    backend = HFBackend(tiny_model, dtype="bf16-mixed", device="cpu")
    backend.load_weights()
    return backend


def _rows(head: torch.Tensor, n: int = 24, seed: int = 0):
    """Hidden vectors whose logits reach 40-80 (where bfloat16's step is 0.25-0.5), half of them peaked, half flat;
    targets: each row's argmax, the least likely token, and tokens in the first, middle and last slice."""
    vocab, hidden = head.shape
    g = torch.Generator().manual_seed(seed)
    vectors = torch.randn(n, hidden, generator=g)
    vectors = vectors / (vectors @ head.t()).abs().amax(1, keepdim=True) * torch.linspace(40, 80, n)[:, None]
    vectors[n // 2:] *= 0.15  # flat rows: many tokens share the mass
    logits = vectors @ head.t()
    rows = torch.arange(n).repeat_interleave(5)
    picks = torch.stack([logits.argmax(1), logits.argmin(1), torch.full((n,), 3), torch.full((n,), vocab // 2),
                         torch.full((n,), vocab - 1)], dim=1).flatten()
    want = torch.log_softmax(logits.double(), -1)[rows, picks]
    return vectors, picks, rows, want, logits


def test_shifted_bf16_projection_is_close_to_float32(mixed):
    head = mixed.model.get_output_embeddings().weight.detach()
    assert mixed._head16 is not None and mixed._head16.dtype == torch.bfloat16
    assert mixed._head16.shape == (head.shape[0], head.shape[1] + 1) and bool((mixed._head16[:, -1] == 1).all())
    vectors, targets, rows, want, logits = _rows(head)
    for chunk in (7, head.shape[0] // 3, 32768):
        lp, greedy = mixed._project(vectors, targets, rows=rows, chunk=chunk)
        assert (lp - want).abs().max() < 5e-3, chunk
        assert bool((lp <= 0).all())
        assert greedy.tolist() == (logits.argmax(1)[rows] == targets).tolist()
    # what the shift and the float32 top are for: a plain bfloat16 product is off by far more on these rows
    plain = torch.log_softmax((vectors.bfloat16() @ head.bfloat16().t()).double(), -1)[rows, targets]
    assert (plain - want).abs().max() > 0.05


def test_without_the_shift_or_the_exact_top_the_error_grows(mixed, monkeypatch):
    """Each of the two devices matters: with no float32 top and the shift never raised from the targets' logits
    (REDO_ABOVE infinite), the unlikely targets' rows are rounded where the mass is; with the shift but no exact
    top, the rounding of h and of the matrix stays in the log-sum-exp."""
    head = mixed.model.get_output_embeddings().weight.detach()
    vectors, targets, rows, want, logits = _rows(head, seed=1)
    unlikely = logits[rows, targets] < logits.amax(1)[rows] - 5  # targets far below their row's maximum: the first
    targets, rows, want = targets[unlikely], rows[unlikely], want[unlikely]  # shift, far from where the mass is

    def error(top: int, redo: float) -> float:
        monkeypatch.setattr(hf_project, "EXACT_TOP", top)
        monkeypatch.setattr(hf_project, "REDO_ABOVE", redo)
        return float((mixed._project(vectors, targets, rows=rows, chunk=50)[0] - want).abs().max())

    full, shift_only, neither = error(16, 1.0), error(1, 1.0), error(1, float("inf"))
    assert full < 5e-3 and full < shift_only < neither, (full, shift_only, neither)


def test_the_shifted_projection_applies_only_to_a_plain_linear_head(mixed, monkeypatch):
    model = mixed.model
    assert hf_project.shifted_head(model) is not None
    monkeypatch.setattr(model.config, "final_logit_softcapping", 30.0, raising=False)
    assert hf_project.shifted_head(model) is None  # tanh of the logits is not a shift of them
    monkeypatch.setattr(model.config, "final_logit_softcapping", None, raising=False)
    monkeypatch.setattr(model.config, "is_encoder_decoder", True, raising=False)
    assert hf_project.shifted_head(model) is None  # scored from its logits: the copy would only take memory
    monkeypatch.setattr(model.config, "is_encoder_decoder", False, raising=False)
    monkeypatch.setattr(model.get_output_embeddings(), "bias", torch.nn.Parameter(torch.zeros(model.get_output_embeddings().weight.shape[0])))
    assert hf_project.shifted_head(model) is None


def test_float32_keeps_the_float32_projection_and_close_releases_the_copy(tiny_model):
    full = HFBackend(tiny_model, dtype="float32", device="cpu")
    full.load_weights()
    assert full._head16 is None
    mixed = HFBackend(tiny_model, dtype="bf16-mixed", device="cpu")
    mixed.load_weights()
    assert mixed._head16 is not None
    mixed.close()
    assert mixed._head16 is None
