"""Hugging Face transformers backend: load a causal or encoder-decoder LM (hub id, local dir, GGUF) and
serve the backend contract with it: token counts, the chat template, batched scoring and generation.
The scoring plan is in hf_score.py, the kernels in hf_packing.py, hf_compute.py and hf_generate.py, model files in
acquire.py. Nothing here imports torch or transformers until it is needed: a run whose every request is in the result
cache reads the model's files and never loads either."""

from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ...errors import ModelError
from ...launch import launch_env
from ..acquire import (DEFAULT_MODEL, _cached_snapshot, files_fingerprint, resolve_model, tokenizer_fingerprint,
                      weights_fingerprint)
from ..base import ContinuationScore, Generation, cut_at_stop
from ..batching import run_halving
from .setup import (LOAD_AS, _architecture, _Fields, _read_config, auto_batch_tokens, device_name, dtype_name,
                       pick_device, pick_dtype, tune_malloc)

if TYPE_CHECKING:
    import torch

    from .forward import _Scored

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


def chat_formatter(tokenizer) -> Callable[[tuple[tuple[str, str], ...]], str] | None:
    """The `format_chat` capability: (role, text) turns → the tokenizer's chat template with the assistant's turn
    opened; None when the tokenizer has no chat template. An error the template raises is passed on."""
    if not getattr(tokenizer, "chat_template", None):
        return None

    def format_chat(messages: tuple[tuple[str, str], ...]) -> str:
        return tokenizer.apply_chat_template([{"role": role, "content": text} for role, text in messages],
                                             tokenize=False, add_generation_prompt=True)
    return format_chat


class HFBackend:
    """A causal LM from transformers; `loglikelihood` scores (prompt, continuation) pairs.

    The weights and the tokenizer load when first needed: a model in a local folder (a built-in model, a converted
    GGUF, a directory, a cached hub snapshot) is fingerprinted from its files, so a run whose every request is in
    the result cache never loads it."""

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
        self._head16 = None  # bf16-mixed: the output matrix for the shifted bfloat16 projection (hf_project.py)
        self.forward_tokens = 0
        # keys that the forwarded tokens attended to, summed (full layers / sliding-window layers):
        # with forward_tokens this gives the model FLOPs actually done, attention included
        self.attention_keys = [0, 0]
        self.projected_rows = 0  # positions projected onto the vocabulary: each once, however many targets it predicts
        self.backoffs = 0
        self.min_shared_prefix = min_shared_prefix
        self.project_rows = 128  # rows gathered before one vocabulary projection (one chunk of _project)
        # the result cache is keyed by this: the files (weights, configuration, tokenizer), dtype, which class loads
        # them, backend version. A model in a local folder is read as files, without transformers (a fully cached run
        # never loads it); one still to come from the Hub, or with code of its own, loads now
        folder = Path(self.location) if Path(self.location).is_dir() else None
        raw = _read_config(folder) if folder else {}
        # encoder-decoder models (T5 family) go through the same interface: the prompt is the
        # encoder's input, continuations and generations are the decoder's
        self.seq2seq = bool(raw.get("is_encoder_decoder"))
        self._class_name = _architecture(raw, self.seq2seq)
        own_code = bool(trust_remote_code and raw.get("auto_map"))
        if folder is None or own_code:
            self._configure()
            self._load()
            folder = folder or _cached_snapshot(self.location)
        # which class loads the files: (kind, model_type) as transformers maps it, the same whether the files came from
        # the Hub just now or from a local copy; for code shipped with the model, the class that code defined
        kind = [type(self._model).__name__] if own_code else \
            ["seq2seq" if self.seq2seq else "causal", raw.get("model_type") if raw else self.config.model_type]
        files = files_fingerprint(folder) if folder else None
        self._parameters = files[1] if files else None
        weights = files[0] if files else [weights_fingerprint(self.model), tokenizer_fingerprint(self.tokenizer)]
        self.fingerprint = hashlib.sha256(json.dumps([weights, f"torch.{self._dtype}", kind, BACKEND_VERSION]).encode()).hexdigest()[:24]
        sizes = _Fields(raw) if raw else self.config
        self.batch_tokens = auto_batch_tokens(sizes, self._dtype, self._device) if batch_tokens == "auto" else int(batch_tokens)

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
        from transformers import AutoConfig

        self.__dict__["_configured"] = True
        try:
            config = AutoConfig.from_pretrained(self.location, trust_remote_code=self._remote)
        except (OSError, ValueError) as exc:
            raise self._load_error(exc) from None
        asked, own = self._asked, self.__dict__
        own["seq2seq"] = bool(getattr(config, "is_encoder_decoder", False))
        max_length = int(getattr(config, "max_position_embeddings", 0) or 2048)
        # prompt sharing reads continuations from the prompt's key/value cache; keep it inside
        # the smallest attention window so sliding-window layers see exactly what a full pass sees
        window = int(getattr(config, "sliding_window", None) or max_length)
        share_limit = min(max_length, window - 1)
        # sliding-window layers get a mask of their own when the model takes one mask per layer type (transformers'
        # `layer_types`); otherwise a packed tree stays inside the window, where the two masks are the same
        layer_types = set(getattr(getattr(config, "get_text_config", lambda: config)(), "layer_types", None) or [])
        sliding_masks = window < max_length and "sliding_attention" in layer_types
        values = {
            "config": config, "max_length": max_length, "window": window, "share_limit": share_limit,
            "share_prompts": asked["share_prompts"] and not self.seq2seq,
            # score_packed packs prompt groups up to hf_packing.max_tree tokens (wider ones take the cached or
            # unshared path) into rows as wide as a batch
            "pack_prompts": asked["pack_prompts"] and not self.seq2seq,
            "sliding_masks": sliding_masks,
            "pack_depth": max_length if sliding_masks or window >= max_length else share_limit,
        }
        for key, value in values.items():
            own.setdefault(key, value)

    def _load_error(self, exc: Exception) -> ModelError:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return ModelError(f"could not load model '{self.spec}': {first}. Pass a hub id (needs the Hub), a local model "
                          "directory or a .gguf file.")

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            try:  # code shipped inside a model repository runs only when the user says so
                self._tokenizer = AutoTokenizer.from_pretrained(self.location, trust_remote_code=self._remote)
            except (OSError, ValueError) as exc:
                raise self._load_error(exc) from None
        return self._tokenizer

    @property
    def device(self) -> torch.device:
        import torch

        return torch.device(self._device)

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the weights (bf16-mixed keeps them in float32; see precision())."""
        import torch

        return getattr(torch, LOAD_AS.get(self._dtype, self._dtype))

    def precision(self):
        """The context the model computes in: bf16-mixed runs the layers' matrix products in bfloat16 under
        torch.autocast (the vocabulary projection turns it off and makes its own shifted bfloat16 product,
        hf_project.py); other dtypes as loaded."""
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
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM
        from transformers.utils import logging as hf_logging

        if self._closed:
            raise ModelError(f"model '{self.spec}' was released (close()); load it again to score with it")
        loader = AutoModelForSeq2SeqLM if self.seq2seq else AutoModelForCausalLM
        if self._device == "cpu":
            tune_malloc()
        placement = {"device_map": self._device_map} if self._device_map else {}
        bars = hf_logging.is_progress_bar_enabled()
        if not self._bars:  # transformers' own loading bars show only when progress is wanted
            hf_logging.disable_progress_bar()
        try:
            model = loader.from_pretrained(self.location, dtype=self.dtype, trust_remote_code=self._remote, **placement)
        except (OSError, ValueError) as exc:
            raise self._load_error(exc) from None
        finally:
            if bars:
                hf_logging.enable_progress_bar()
        if self._device_map:  # accelerate placed the layers; inputs go where the embeddings are
            self._device = str(model.get_input_embeddings().weight.device)
        else:
            model.to(self.device)
        model.eval()
        if self._dtype == "bf16-mixed":  # the layers' weights once in bfloat16, not cast again by autocast per forward
            head = model.get_output_embeddings()
            for module in model.modules():
                if isinstance(module, torch.nn.Linear) and module is not head:
                    module.to(torch.bfloat16)
            from .project import shifted_head

            self._head16 = shifted_head(model)
        self._model, self._class_name = model, type(model).__name__
        self.share_prompts = getattr(self, "share_prompts", True) and model.base_model is not model
        # transformers 5.x renamed the forward argument `past_key_values` to `cache`
        params = inspect.signature(model.base_model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        from . import packing as hf_packing

        self.attention_per_key = hf_packing.attention_per_key(model)

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
            from transformers.models.auto import modeling_auto as auto

            table = auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES if self.seq2seq else auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
            self._class_name = table.get(getattr(self.config, "model_type", None))
        return {"model": self.spec, "class": self._class_name, "dtype": self._dtype,
                "dtype_asked": self._asked["dtype"], "device": self._device, "fingerprint": self.fingerprint, "parameters": parameters}

    def encode(self, prompt: str, continuation: str) -> tuple[list[int], list[int]]:
        """Token ids of the prompt (with BOS) and of the continuation as it follows that prompt."""
        # whitespace at the end of the prompt belongs to the continuation's first token
        stripped = prompt.rstrip()
        continuation = prompt[len(stripped):] + continuation
        tok = self.tokenizer
        special = self._add_special(stripped)
        ctx = tok(stripped, add_special_tokens=special)["input_ids"]
        whole = tok(stripped + continuation, add_special_tokens=special)["input_ids"]
        if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
            cont = whole[len(ctx):]
        else:
            cont = tok(continuation, add_special_tokens=False)["input_ids"]
        if not ctx:  # a model with no BOS still needs one token to condition on
            start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
            ctx = [start]
        return ctx, cont

    def _add_special(self, text: str) -> bool:
        """Let the tokenizer add its special tokens (BOS), unless the text already starts with the BOS
        token, as text from a chat template does."""
        bos = self.tokenizer.bos_token
        return not (bos and text.startswith(bos))

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Token count of each text (no special tokens), in one batched tokenizer call."""
        return [len(ids) for ids in self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]] if texts else []

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
        if pairs:
            self.load_weights()  # here, when there is something to score
        from . import plan as hf_score

        with self.precision():
            return hf_score.loglikelihood(self, pairs, progress, on_scores)


    def generate(self, specs: list[tuple], progress: Callable[[int], None] | None = None,
                 on_results: Callable[[list[int], list[Generation]], None] | None = None) -> list[Generation]:
        """Generation for (prompt, stop sequences, max new tokens[, temperature, seed]) specs; see hf_generate.generate."""
        from . import generate as hf_generate

        if specs:
            self.load_weights()
        with self.precision():
            return hf_generate.generate(self, specs, progress, on_results)

    def _run(self, batch: list, compute: Callable, indices: Callable, finish: Callable) -> None:
        """Compute one batch; on out-of-memory, halve the budget and split the batch instead of failing."""
        run_halving(batch, compute, indices, finish, self._shrink)

    def _shrink(self) -> None:
        """After an out-of-memory error: free the allocator's cached blocks and halve the token budget."""
        if self._device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
        self.batch_tokens = max(64, self.batch_tokens // 2)
        self.backoffs += 1

    def _count_keys(self, spans) -> None:
        """Add the keys attended to by `n` tokens that follow `past` earlier ones, for each (past, n)."""
        from .forward import _keys_seen

        for past, n in spans:
            self.attention_keys[0] += _keys_seen(past, n, None)
            self.attention_keys[1] += _keys_seen(past, n, self.window)

    def _pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    # the compute kernels, called through the instance so that a test can replace one on it (imported here: they
    # import torch)
    def _score_shared(self, items: list[tuple[list[int], list[list[int]], int]]) -> _Scored:
        from .forward import score_shared

        return score_shared(self, items)

    def _score_packed(self, trees: list[list[tuple[list[int], list[list[int]]]]]) -> _Scored:
        from .packing import score_packed

        return score_packed(self, trees)

    def _score_batch(self, items: list[tuple[list[int], list[int]]]) -> _Scored:
        from .forward import score_batch

        return score_batch(self, items)

    def _project(self, vectors: torch.Tensor, targets: torch.Tensor, is_logits: bool = False, chunk: int | None = None,
                 rows: torch.Tensor | None = None):
        from .project import project

        return project(self, vectors, targets, is_logits, chunk, rows)
