"""Model backends: one interface, `loglikelihood(pairs)`, per backend module."""

from .hf import ContinuationScore, HFBackend

__all__ = ["ContinuationScore", "HFBackend"]
