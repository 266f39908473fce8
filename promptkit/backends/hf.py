"""Hugging Face transformers backend: load a causal or encoder-decoder LM (hub id, local dir, GGUF) and
serve the backend contract with it: token counts, the chat template, batched scoring and generation.
The compute kernels live in hf_compute.py and hf_generate.py; model files in acquire.py."""

from __future__ import annotations

import hashlib
import inspect
import json
from typing import Callable

import torch

from ..errors import ModelError
from ..launch import launch_env
from . import hf_compute, hf_generate, hf_packing
from .acquire import DEFAULT_MODEL, resolve_model, tokenizer_fingerprint, weights_fingerprint
from .base import ContinuationScore, Generation
from .batching import budget_batches, collector, run_halving
from .hf_compute import _keys_seen, _lcp, _Scored
from .hf_generate import cut_at_stop

# the result types, resolve_model and cut_at_stop are re-exported: callers and tests import them from here
__all__ = ["BACKEND_VERSION", "DEFAULT_MODEL", "ContinuationScore", "Generation", "HFBackend", "auto_batch_tokens",
           "chat_formatter", "check", "cut_at_stop", "load", "pick_device", "pick_dtype", "resolve_model"]

BACKEND_VERSION = "hf-4"


def load(target: str | None, *, dtype: str = "auto", device: str = "auto", batch_tokens: int | str = "auto",
         trust_remote_code: bool = False, device_map: str | dict | None = None, progress: bool = True,
         log: Callable[[str], None] = print, **ignored) -> HFBackend:
    """The backend for `target` (None: the default model), as `backends.base.load_backend` asks for it;
    transformers' own loading bars show only when `progress` is wanted. Options of other backends are ignored."""
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        return HFBackend(target, dtype=dtype, device=device, batch_tokens=batch_tokens,
                         trust_remote_code=trust_remote_code, device_map=device_map, log=log)
    finally:
        if bars:
            hf_logging.enable_progress_bar()


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


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ModelError(f"unknown dtype '{dtype}'; use auto, float32, bfloat16 or float16")
    return table[dtype]


def auto_batch_tokens(model, device: torch.device, budget_bytes: int | None = None) -> int:
    """Padded tokens per batch that keep activations and key/value copies inside a memory budget
    (a quarter of free memory, at most 4 GiB on CPU); the batch is halved on out-of-memory anyway."""
    cfg = getattr(model.config, "get_text_config", lambda: model.config)()
    hidden = int(getattr(cfg, "hidden_size", 1024))
    inter = int(getattr(cfg, "intermediate_size", 4 * hidden) or 4 * hidden)
    layers = int(getattr(cfg, "num_hidden_layers", 12))
    heads = int(getattr(cfg, "num_key_value_heads", None) or getattr(cfg, "num_attention_heads", 8))
    head_dim = int(getattr(cfg, "head_dim", None) or hidden // max(int(getattr(cfg, "num_attention_heads", 8)), 1))
    width = next(model.parameters()).element_size()
    per_token = width * (layers * 2 * heads * head_dim + 6 * hidden + 3 * inter)
    if budget_bytes is None:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            budget_bytes = int(free * 0.5)
        else:
            try:
                import psutil

                # processes of one job on this machine share its memory
                share = max(1, launch_env()[2])
                budget_bytes = min(int(psutil.virtual_memory().available * 0.25 / share), 4 << 30)
            except ImportError:
                budget_bytes = 2 << 30
    tokens = budget_bytes // max(per_token, 1)
    cap = 4096 if device.type == "cpu" else 65536  # CPU matmuls gain nothing from bigger batches
    return int(max(256, min(cap, tokens)))


class HFBackend:
    """A causal LM from transformers; `loglikelihood` scores (prompt, continuation) pairs."""

    def __init__(self, model: str | None = None, dtype: str = "auto", device: str = "auto",
                 batch_tokens: int | str = "auto", share_prompts: bool = True, min_shared_prefix: int = 16,
                 pack_prompts: bool = True,
                 trust_remote_code: bool = False, device_map: str | dict | None = None,
                 log: Callable[[str], None] = print):
        from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

        self.spec = model or DEFAULT_MODEL
        if device_map and launch_env()[2] > 1:
            raise ModelError(f"--device-map {device_map} spreads one model over all GPUs of a machine, but this machine runs "
                             f"{launch_env()[2]} processes of the job; launch one process per machine "
                             "(accelerate launch --num_processes = number of machines), or drop --device-map to give each "
                             "process its own GPU")
        location, identity = resolve_model(model, log)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        try:
            # code shipped inside a model repository runs only when the user says so
            self.tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
            placement = {"device_map": device_map} if device_map else {}
            config = AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code)
            # encoder-decoder models (T5 family) go through the same interface: the prompt is the
            # encoder's input, continuations and generations are the decoder's
            self.seq2seq = bool(getattr(config, "is_encoder_decoder", False))
            loader = AutoModelForSeq2SeqLM if self.seq2seq else AutoModelForCausalLM
            self.model = loader.from_pretrained(location, dtype=self.dtype, trust_remote_code=trust_remote_code, **placement)
        except (OSError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelError(
                f"could not load model '{self.spec}': {first}. Pass a hub id (needs the Hub), a local model "
                "directory or a .gguf file."
            ) from None
        if device_map:  # accelerate placed the layers; inputs go where the embeddings are
            self.device = self.model.get_input_embeddings().weight.device
        else:
            self.model.to(self.device)
        self.model.eval()
        self.batch_tokens = auto_batch_tokens(self.model, self.device) if batch_tokens == "auto" else int(batch_tokens)
        self.max_length = int(getattr(self.model.config, "max_position_embeddings", 0) or 2048)
        # prompt sharing reads continuations from the prompt's key/value cache; keep it inside
        # the smallest attention window so sliding-window layers see exactly what a full pass sees
        window = getattr(self.model.config, "sliding_window", None) or self.max_length
        self.share_limit = min(self.max_length, int(window) - 1)
        self.window = int(window)
        self.share_prompts = share_prompts and not self.seq2seq and self.model.base_model is not self.model
        # transformers 5.x renamed the forward argument `past_key_values` to `cache`
        params = inspect.signature(self.model.base_model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        # the result cache is keyed by this: weights, dtype, tokenizer, model class, backend version
        self.fingerprint = hashlib.sha256(json.dumps([
            weights_fingerprint(self.model), str(self.dtype), tokenizer_fingerprint(self.tokenizer),
            type(self.model).__name__, BACKEND_VERSION]).encode()).hexdigest()[:24]
        self.identity = identity
        self.format_chat = chat_formatter(self.tokenizer)  # None: the model has no chat template
        self.forward_tokens = 0
        # keys that the forwarded tokens attended to, summed (full layers / sliding-window layers):
        # with forward_tokens this gives the model FLOPs actually done, attention included
        self.attention_keys = [0, 0]
        self.backoffs = 0
        self.min_shared_prefix = min_shared_prefix
        self.project_rows = 128  # rows gathered before one vocabulary projection (one chunk of _project)
        # narrowest row of score_packed: small trees (lone short prompts) share rows of this width; a larger tree
        # gets a row as wide as itself, up to hf_packing.max_tree (wider groups take the cached or unshared path)
        self.pack_tokens = 256 if pack_prompts and not self.seq2seq else 0
        # sliding-window layers get a mask of their own when the model takes one mask per layer type (transformers'
        # `layer_types`); otherwise a packed tree stays inside the window, where the two masks are the same
        layer_types = set(getattr(getattr(self.model.config, "get_text_config", lambda: self.model.config)(), "layer_types", None) or [])
        self.sliding_masks = self.window < self.max_length and "sliding_attention" in layer_types
        self.pack_depth = self.max_length if self.sliding_masks or self.window >= self.max_length else self.share_limit
        self.attention_per_key = hf_packing.attention_per_key(self.model)

    @property
    def name(self) -> str:
        return self.spec

    def close(self) -> None:
        """Release the weights (a run with several models holds one at a time); the backend is unusable afterwards."""
        import gc

        self.model = None
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def describe(self) -> dict:
        return {"model": self.spec, "class": type(self.model).__name__, "dtype": str(self.dtype).removeprefix("torch."),
                "device": str(self.device), "fingerprint": self.fingerprint,
                "parameters": sum(p.numel() for p in self.model.parameters())}

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
        if self.seq2seq:
            return hf_compute.loglikelihood_seq2seq(self, pairs, progress, on_scores, _scores_of(pairs))
        encoded = [self.encode(p, c) for p, c in pairs]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (ctx, _) in enumerate(encoded):
            groups.setdefault(tuple(ctx), []).append(i)
        results: list[ContinuationScore | None] = [None] * len(pairs)
        finish = collector(results, on_scores, progress, _scores_of(pairs))

        def group_cost(g):  # the prompt, plus per continuation the keys it attends to (its prompt) and its tokens;
            # this keeps a batch to about one cluster of similar prompts, which keeps padding small
            return len(g[0]) * (1 + len(g[1])) + sum(len(encoded[j][1]) for j in g[1])

        def alone_size(g):  # tokens of a prompt group as a tree of its own in score_packed
            return hf_packing.tree_size([g[0]], [[encoded[j][1] for j in g[1]]], 0)

        packable, shared, single = [], [], []
        for ctx, members in groups.items():
            longest = max(len(encoded[j][1]) for j in members)
            if self.pack_tokens and self.share_prompts and len(ctx) + longest <= self.pack_depth \
                    and alone_size((ctx, members)) <= hf_packing.max_tree(self):
                packable.append((ctx, members))
                continue
            fits = self.share_prompts and 2 <= len(ctx) and len(ctx) + longest <= self.share_limit
            if fits and group_cost((ctx, members)) > self.batch_tokens:
                # too many continuations for one batch: chunks whose memory (the prompt's cache per packed row,
                # the continuation tokens) fits the budget, so that memory does not grow with their number
                chunks = hf_compute.split_group(self, len(ctx), [len(encoded[j][1]) for j in members])
                shared += [(ctx, [members[i] for i in chunk]) for chunk in chunks]
            else:
                (shared if fits else single).append((ctx, members))

        # the vocabulary projection reads the whole output matrix, so rows wait here and are
        # projected a few hundred at a time rather than a few dozen per batch
        pending: list[tuple[list[int], _Scored]] = []
        pending_rows = [0]

        def project() -> None:
            if not pending:
                return
            pending_rows[0] = 0
            offsets = [0]
            for _, sc in pending:
                offsets.append(offsets[-1] + len(sc.vectors))
            token_lp, greedy = self._project(torch.cat([sc.vectors for _, sc in pending]),
                                             torch.cat([sc.targets for _, sc in pending]), is_logits=pending[0][1].is_logits,
                                             rows=torch.cat([sc.target_rows() + o for (_, sc), o in zip(pending, offsets)]))
            lp, gr, base = token_lp.tolist(), greedy.tolist(), 0
            for indices, sc in pending:
                finish(indices, [(sum(lp[base + r] for r in rows), len(rows), all(gr[base + r] for r in rows))
                                 for rows in sc.layout])
                base += len(sc.targets)
            pending.clear()

        def defer(indices: list[int], scored: _Scored) -> None:
            if pending and pending[0][1].is_logits != scored.is_logits:
                project()
            pending.append((indices, scored))
            pending_rows[0] += len(scored.vectors)
            if scored.is_logits or pending_rows[0] >= self.project_rows:
                project()

        def tree(t):  # a planned tree → score_packed's (prompt, continuations) pairs
            return [(list(ctx), [encoded[j][1] for j in m]) for ctx, m in t]

        for batch in hf_packing.packed_batches(hf_packing.plan_trees(self, packable, lambda g: [encoded[j][1] for j in g[1]]),
                                               lambda t: t.size, self.pack_tokens, self.batch_tokens):
            self._run(batch, lambda b: self._score_packed([tree(t.groups) for t in b]),
                      lambda b: [j for t in b for _, m in t.groups for j in m], defer)
        for batch in self._plan_shared(shared, group_cost):
            self._run(batch, lambda b: self._score_shared([(list(ctx), [encoded[j][1] for j in m], c) for ctx, m, c in b]),
                      lambda b: [j for _, m, _ in b for j in m], defer)
        rest = sorted((j for _, members in single for j in members), key=lambda j: -sum(map(len, encoded[j])))
        for batch in budget_batches(rest, lambda j: min(sum(map(len, encoded[j])), self.max_length), self.batch_tokens, padded=True):
            self._run(batch, lambda b: self._score_batch([encoded[j] for j in b]), lambda b: list(b), defer)
        project()
        return results  # type: ignore[return-value]


    def generate(self, specs: list[tuple], progress: Callable[[int], None] | None = None,
                 on_results: Callable[[list[int], list[Generation]], None] | None = None) -> list[Generation]:
        """Generation for (prompt, stop sequences, max new tokens[, temperature, seed]) specs; see hf_generate.generate."""
        return hf_generate.generate(self, specs, progress, on_results)

    def _plan_shared(self, groups: list, cost: Callable) -> list[list]:
        """Batches of prompt groups, longest first under the token budget. Each group is tagged with
        a cluster: neighbours in lexicographic order that share at least `min_shared_prefix` tokens,
        so that inside a batch every cluster's common prefix runs once."""
        ordered = sorted(groups, key=lambda g: g[0])  # lexicographic: shared prefixes become neighbours
        tagged, cluster = [], 0
        for i, (ctx, members) in enumerate(ordered):
            if i and _lcp(ordered[i - 1][0], ctx) < self.min_shared_prefix:
                cluster += 1
            tagged.append((ctx, members, cluster))
        sizes: dict[int, int] = {}
        for _, _, c in tagged:
            sizes[c] = sizes.get(c, 0) + 1
        # clusters stay together (their prefix then runs once), longest prompt first inside each;
        # prompts that share nothing are pooled and sorted by length to keep padding small
        clustered = sorted((g for g in tagged if sizes[g[2]] > 1), key=lambda g: (g[2], -len(g[0])))
        alone = sorted((g for g in tagged if sizes[g[2]] == 1), key=lambda g: -len(g[0]))
        return list(budget_batches(clustered + alone, cost, self.batch_tokens))

    def _run(self, batch: list, compute: Callable, indices: Callable, finish: Callable) -> None:
        """Compute one batch; on out-of-memory, halve the budget and split the batch instead of failing."""
        run_halving(batch, compute, indices, finish, self._shrink)

    def _shrink(self) -> None:
        """After an out-of-memory error: free the allocator's cached blocks and halve the token budget."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        self.batch_tokens = max(64, self.batch_tokens // 2)
        self.backoffs += 1

    def _count_keys(self, spans) -> None:
        """Add the keys attended to by `n` tokens that follow `past` earlier ones, for each (past, n)."""
        for past, n in spans:
            self.attention_keys[0] += _keys_seen(past, n, None)
            self.attention_keys[1] += _keys_seen(past, n, self.window)

    def _pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    # the compute kernels, called through the instance so that a test can replace one on it
    def _score_shared(self, items: list[tuple[list[int], list[list[int]], int]]) -> _Scored:
        return hf_compute.score_shared(self, items)

    def _score_packed(self, trees: list[list[tuple[list[int], list[list[int]]]]]) -> _Scored:
        return hf_packing.score_packed(self, trees, self.pack_tokens)

    def _score_batch(self, items: list[tuple[list[int], list[int]]]) -> _Scored:
        return hf_compute.score_batch(self, items)

    def _project(self, vectors: torch.Tensor, targets: torch.Tensor, is_logits: bool = False, chunk: int = 32768,
                 rows: torch.Tensor | None = None):
        return hf_compute.project(self, vectors, targets, is_logits, chunk, rows)


def _scores_of(pairs: list[tuple[str, str]]) -> Callable:
    """(log-prob, tokens, greedy) triples of a batch → ContinuationScores (characters from the pair's continuation)."""
    return lambda indices, out: [ContinuationScore(lp, n, len(pairs[j][1]), g) for j, (lp, n, g) in zip(indices, out)]

