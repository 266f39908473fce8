"""Hugging Face transformers backend: load a causal or encoder-decoder LM (hub id, local dir, GGUF) and
serve the backend contract with it: token counts, the chat template, batched scoring and generation.

HFBackend owns the model, the tokenizer, the settings, the token budget and the counters; the engine's parts take
what they need as arguments (context.py: a Context per call, the Budget, the Counters), never the backend:
setup.py and loading.py settle and load the model, tokens.py encodes, plan.py plans a scoring call into batches,
packing.py, forward.py and attention.py run them, project.py projects onto the vocabulary, generate.py generates.
Model files are acquire.py's. Nothing here imports torch or transformers until it is needed: a run whose every
request is in the result cache reads the model's files and never loads either."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ...errors import ModelError
from ...launch import launch_env
from ..acquire import (DEFAULT_MODEL, cached_snapshot, files_fingerprint, resolve_model, tokenizer_fingerprint,
                       weights_fingerprint)
from ..base import ContinuationScore, Generation, cut_at_stop
from ..batching import run_halving
from . import loading, tokens
from .context import Budget, Context, Counters
from .setup import Fields, architecture, auto_batch_tokens, device_name, dtype_name, pick_device, pick_dtype, read_config
from .tokens import chat_formatter

if TYPE_CHECKING:
    import torch

    from .forward import Scored

# the result types, resolve_model and cut_at_stop are re-exported: callers and tests import them from here
__all__ = ["BACKEND_VERSION", "DEFAULT_MODEL", "ContinuationScore", "Generation", "HFBackend", "auto_batch_tokens",
           "chat_formatter", "check", "cut_at_stop", "load", "pick_device", "pick_dtype", "resolve_model"]

BACKEND_VERSION = "hf-5"


def load(target: str | None, *, dtype: str = "auto", device: str = "auto", batch_tokens: int | str = "auto",
         trust_remote_code: bool = False, device_map: str | dict | None = None, progress: bool = True,
         log: Callable[[str], None] = print, **ignored) -> HFBackend:
    """The backend for `target` (None: the default model), as `backends.base.load_backend` asks for it;
    transformers' own loading bars show only when `progress` is wanted. Options of other backends are ignored."""
    return HFBackend(target, dtype=dtype, device=device, batch_tokens=batch_tokens,
                     trust_remote_code=trust_remote_code, device_map=device_map, progress=progress, log=log)


def check(target: str | None, *, log: Callable[[str], None] = print, **ignored) -> None:
    """What can be known without loading the weights: the spec resolves to a model folder, .gguf file, built-in
    name or hub id (a missing path, an absent package or a bad .gguf raises ModelError)."""
    resolve_model(target, log)


def _counter(name: str, doc: str) -> property:
    """One of the backend's Counters as an attribute of the backend: the engine reads it, a benchmark resets it."""
    return property(lambda self: getattr(self.counters, name), lambda self, value: setattr(self.counters, name, value),
                    doc=doc)


class HFBackend:
    """A causal LM from transformers; `loglikelihood` scores (prompt, continuation) pairs.

    The weights and the tokenizer load when first needed: a model in a local folder (a built-in model, a converted
    GGUF, a directory, a cached hub snapshot) is fingerprinted from its files, so a run whose every request is in
    the result cache never loads it."""

    forward_tokens = _counter("forward_tokens", "Tokens through the model so far, padding excluded.")
    attention_keys = _counter("attention_keys", "Keys attended to so far: [full layers, sliding-window layers].")
    projected_rows = _counter("projected_rows", "Positions projected onto the vocabulary so far.")
    backoffs = _counter("backoffs", "Out-of-memory halvings of the token budget so far.")

    def __init__(self, model: str | None = None, dtype: str = "auto", device: str = "auto",
                 batch_tokens: int | str = "auto", share_prompts: bool = True, min_shared_prefix: int = 16,
                 pack_prompts: bool = True, trust_remote_code: bool = False, device_map: str | dict | None = None, progress: bool = True,
                 log: Callable[[str], None] = print):
        self.spec = model or DEFAULT_MODEL
        if device_map and launch_env()[2] > 1:
            raise ModelError(f"--device-map {device_map} spreads one model over all GPUs of a machine, but this machine runs "
                             f"{launch_env()[2]} processes of the job; launch one process per machine "
                             "(accelerate launch --num_processes = number of machines), or drop --device-map to give each "
                             "process its own GPU")
        self.location, self.identity = resolve_model(model, log)
        self._device = device_name(device)
        self._dtype = dtype_name(dtype, self._device)
        self._remote, self._device_map, self._bars = trust_remote_code, device_map, progress
        self._asked = {"dtype": dtype, "batch_tokens": batch_tokens, "share_prompts": share_prompts, "pack_prompts": pack_prompts}
        self._model, self._tokenizer, self._closed = None, None, False
        self._head16 = None  # bf16-mixed: the output matrix for the shifted bfloat16 projection (project.py)
        self._cache_arg = "past_key_values"  # the forward argument that takes a key/value cache (set on load)
        self.counters = Counters()
        self.min_shared_prefix = min_shared_prefix
        self.project_rows = 128  # rows gathered before one vocabulary projection (one chunk of _project)
        # the result cache is keyed by this: the files (weights, configuration, tokenizer), dtype, which class loads
        # them, backend version. A model in a local folder is read as files, without transformers (a fully cached run
        # never loads it); one still to come from the Hub, or with code of its own, loads now
        folder = Path(self.location) if Path(self.location).is_dir() else None
        raw = read_config(folder) if folder else {}
        # encoder-decoder models (T5 family) go through the same interface: the prompt is the
        # encoder's input, continuations and generations are the decoder's
        self.seq2seq = bool(raw.get("is_encoder_decoder"))
        self._class_name = architecture(raw, self.seq2seq)
        own_code = bool(trust_remote_code and raw.get("auto_map"))
        if folder is None or own_code:
            self._configure()
            self._load()
            folder = folder or cached_snapshot(self.location)
        # which class loads the files: (kind, model_type) as transformers maps it, the same whether the files came from
        # the Hub just now or from a local copy; for code shipped with the model, the class that code defined
        kind = [type(self._model).__name__] if own_code else \
            ["seq2seq" if self.seq2seq else "causal", raw.get("model_type") if raw else self.config.model_type]
        files = files_fingerprint(folder) if folder else None
        self._parameters = files[1] if files else None
        weights = files[0] if files else [weights_fingerprint(self.model), tokenizer_fingerprint(self.tokenizer)]
        self.fingerprint = hashlib.sha256(json.dumps([weights, f"torch.{self._dtype}", kind, BACKEND_VERSION]).encode()).hexdigest()[:24]
        sizes = Fields(raw) if raw else self.config
        self.budget = Budget(auto_batch_tokens(sizes, self._dtype, self._device) if batch_tokens == "auto" else int(batch_tokens))

    @property
    def batch_tokens(self) -> int:
        """Padded tokens per batch (the Budget's), halved on out-of-memory."""
        return self.budget.batch_tokens

    @batch_tokens.setter
    def batch_tokens(self, value: int) -> None:
        self.budget.batch_tokens = value

    # settings read from the model's configuration (transformers' AutoConfig), computed on first use
    _CONFIGURED = frozenset({"config", "max_length", "window", "share_limit", "share_prompts", "pack_prompts",
                             "sliding_masks", "pack_depth"})

    def __getattr__(self, name: str):
        if name in HFBackend._CONFIGURED and "_configured" not in self.__dict__ and "_asked" in self.__dict__:
            self._configure()
            return getattr(self, name)
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def _configure(self) -> None:
        """The settings that follow from the model's configuration; a value already set on the instance stays."""
        own = self.__dict__
        own["_configured"] = True
        values = loading.configure(self.spec, self.location, self._remote, self._asked["share_prompts"],
                                   self._asked["pack_prompts"])
        own["seq2seq"] = values.pop("seq2seq")
        for key, value in values.items():
            own.setdefault(key, value)

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            try:  # code shipped inside a model repository runs only when the user says so
                self._tokenizer = AutoTokenizer.from_pretrained(self.location, trust_remote_code=self._remote)
            except (OSError, ValueError) as exc:
                raise loading.load_error(self.spec, exc) from None
        return self._tokenizer

    @property
    def device(self) -> torch.device:
        import torch

        return torch.device(self._device)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the weights (bf16-mixed keeps them in float32; see precision())."""
        return loading.torch_dtype(self._dtype)

    def precision(self):
        """The context the model computes in: bf16-mixed runs the layers' matrix products in bfloat16 under
        torch.autocast (the vocabulary projection turns it off and makes its own shifted bfloat16 product,
        project.py); other dtypes as loaded."""
        import contextlib

        import torch

        if self._dtype != "bf16-mixed":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    @property
    def model(self):
        return self.load_weights()

    def load_weights(self):
        """The model, loaded on first use."""
        if self._model is None:
            self._load()
        return self._model

    def _load(self) -> None:
        """Load the weights (once), where they will run."""
        if self._closed:
            raise ModelError(f"model '{self.spec}' was released (close()); load it again to score with it")
        model, self._device = loading.load_model(self.spec, self.location, seq2seq=self.seq2seq, dtype=self._dtype,
                                                 device=self._device, device_map=self._device_map,
                                                 trust_remote_code=self._remote, progress=self._bars)
        if self._dtype == "bf16-mixed":
            from .project import shifted_head

            self._head16 = shifted_head(model)
        self._model, self._class_name = model, type(model).__name__
        self.share_prompts = getattr(self, "share_prompts", True) and model.base_model is not model
        self._cache_arg = loading.cache_arg(model)
        self.attention_per_key = loading.attention_per_key(model)

    @property
    def format_chat(self) -> Callable[[tuple[tuple[str, str], ...]], str] | None:
        """The tokenizer's chat template as a function of (role, text) turns; None when it has none."""
        return chat_formatter(self.tokenizer)

    @property
    def name(self) -> str:
        return self.spec

    def close(self) -> None:
        """Release the weights (a run with several models holds one at a time); the backend is unusable afterwards."""
        import gc

        self._model, self._head16, self._closed = None, None, True
        gc.collect()
        if self._device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def describe(self) -> dict:
        parameters = self._parameters
        if parameters is None and self._model is not None:
            parameters = sum(p.numel() for p in self._model.parameters())
        if self._class_name is None:  # config.json names no causal LM class: the one transformers' table maps it to
            self._class_name = loading.mapped_class(self.config, self.seq2seq)
        return {"model": self.spec, "class": self._class_name, "dtype": self._dtype,
                "dtype_asked": self._asked["dtype"], "device": self._device, "fingerprint": self.fingerprint, "parameters": parameters}

    def encode(self, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of the prompt (with BOS) and of the continuation as it follows that prompt."""
        return tokens.encode(self.tokenizer, prompt, continuation)

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Token count of each text (no special tokens), in one batched tokenizer call."""
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]] if texts else []

    def _context(self) -> Context:
        """What the plan and the kernels read for one call: the loaded model, its facts and the current settings."""
        return Context(model=self.load_weights(), tokenizer=self.tokenizer, device=self.device, dtype=self.dtype,
                       pad_id=tokens.pad_id(self.tokenizer), cache_arg=self._cache_arg, head16=self._head16,
                       seq2seq=self.seq2seq, max_length=self.max_length, window=self.window,
                       sliding_masks=self.sliding_masks, min_shared_prefix=self.min_shared_prefix,
                       share_prompts=self.share_prompts, pack_prompts=self.pack_prompts, share_limit=self.share_limit,
                       pack_depth=self.pack_depth, attention_per_key=self.attention_per_key, project_rows=self.project_rows)

    def loglikelihood(self, pairs: list[tuple[str, str]], progress: Callable[[int], None] | None = None,
                      on_scores: Callable[[list[int], list[ContinuationScore]], None] | None = None) -> list[ContinuationScore]:
        """Score each (prompt, continuation) pair.

        Pairs that share a prompt are scored together: the prompt runs once and every
        continuation reads its cached keys/values. Prompts that share a long token prefix (an
        instruction, few-shot demonstrations) are batched together and the prefix runs once
        per batch. Batches are capped by a token budget, halved on out-of-memory, and the
        vocabulary projection runs only where log-probabilities are needed. `on_scores` gets
        each batch's results as soon as they exist (the engine commits them to the cache).
        """
        if not pairs:
            return []
        from . import plan
        from .forward import loglikelihood_seq2seq

        ctx = self._context()  # loads the weights: there is something to score
        with self.precision():
            if ctx.seq2seq:
                return loglikelihood_seq2seq(ctx, self.counters, self.budget, pairs, self._project, self._run,
                                             progress, on_scores)
            # the kernels as the instance has them now: a test may replace one on it
            kernels = plan.Kernels(packed=self._score_packed, shared=self._score_shared, batch=self._score_batch,
                                   project=self._project, run=self._run)
            return plan.loglikelihood(ctx, self.budget, kernels, self.encode, pairs, progress, on_scores)

    def generate(self, specs: list[tuple], progress: Callable[[int], None] | None = None,
                 on_results: Callable[[list[int], list[Generation]], None] | None = None) -> list[Generation]:
        """Generation for (prompt, stop sequences, max new tokens[, temperature, seed]) specs; see generate.generate."""
        if not specs:
            return []
        from .generate import generate

        ctx = self._context()
        with self.precision():
            return generate(ctx, self.counters, self.budget, specs, self._run, progress, on_results)

    def _run(self, batch: list, compute: Callable, indices: Callable, finish: Callable) -> None:
        """Compute one batch; on out-of-memory, halve the budget and split the batch instead of failing."""
        run_halving(batch, compute, indices, finish, self._shrink)

    def _shrink(self) -> None:
        """After an out-of-memory error: free the allocator's cached blocks and halve the token budget."""
        if self._device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
        self.budget.halve()
        self.counters.add_backoff()

    # the compute kernels, called through the instance so that a test can replace one on it (imported here: they
    # import torch); each gets a Context made now, the counters, and the widths the budget allows now
    def _score_shared(self, items: list[tuple[list[int], list[list[int]], int]]) -> Scored:
        from .forward import pack_width, score_shared

        return score_shared(self._context(), self.counters, items, pack_width(self.budget))

    def _score_packed(self, trees: list[list[tuple[list[int], list[list[int]]]]]) -> Scored:
        from .packing import max_tree, score_packed

        return score_packed(self._context(), self.counters, trees, max_tree(self.budget))

    def _score_batch(self, items: list[tuple[list[int], list[int]]]) -> Scored:
        from .forward import score_batch

        return score_batch(self._context(), self.counters, items)

    def _project(self, vectors: torch.Tensor, targets: torch.Tensor, is_logits: bool = False, chunk: int | None = None,
                 rows: torch.Tensor | None = None):
        from .project import project

        return project(self._context(), self.counters, vectors, targets, is_logits, chunk, rows)
