"""What the Hugging Face backend settles before it loads a model, without importing torch or transformers where it
can: the device, the dtype, the token budget of a batch, and the model's config.json read as plain JSON."""

from __future__ import annotations

import ctypes
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import ModelError
from ...launch import launch_env

if TYPE_CHECKING:
    import torch


def pick_device(device: str = "auto") -> torch.device:
    import torch

    return torch.device(device_name(device))


def device_name(device: str = "auto") -> str:
    """'auto' → 'cuda' where a GPU is usable, else 'cpu'; other names as given. On Linux without the device nodes
    that CUDA and ROCm open, there is no GPU to find, and torch is not imported to learn that."""
    if device != "auto":
        return device
    if "torch" not in sys.modules and sys.platform.startswith("linux") and \
            not any(os.path.exists(p) for p in ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


DTYPES = {"float32": 4, "bfloat16": 2, "float16": 2, "bf16-mixed": 4}  # name → bytes per value
# bf16-mixed: loaded in float32 (residual stream, norms, embeddings); the layers' linear maps then stored in bfloat16
# and their products run in bfloat16 (torch.autocast), the vocabulary projection as a shifted bfloat16 product with
# its top logits in float32 (project.py): the matrix products are where the time goes
LOAD_AS = {"bf16-mixed": "float32"}


def dtype_name(dtype: str, device: str) -> str:
    """'auto' → bfloat16 (or float16 without bfloat16) on a GPU; on CPU bf16-mixed where the CPU has bfloat16 matrix
    instructions, else float32; other names checked. bf16-mixed met the rule for a lower precision (at least 99% of
    predictions as in float32 and the same chosen variant) on the built-in suite (99.1%, the same variant, Kendall
    tau 0.96; benchmarks/README); full bfloat16 did not."""
    if dtype == "auto":
        if device.startswith("cuda"):
            import torch

            return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        return "bf16-mixed" if device == "cpu" and cpu_has_bf16() else "float32"
    if dtype not in DTYPES:
        raise ModelError(f"unknown dtype '{dtype}'; use auto, float32, bfloat16, float16 or bf16-mixed")
    return dtype


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AVX512-BF16 or AMX): there bf16 matrix products run
    ~4x faster than float32; elsewhere torch emulates them and they are slower. Read from the kernel's CPU flags, so
    only Linux answers yes."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[-1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    import torch

    name = dtype_name(dtype, str(device))
    return getattr(torch, LOAD_AS.get(name, name))


def auto_batch_tokens(config, dtype: str, device: str, budget_bytes: int | None = None) -> int:
    """Padded tokens per batch that keep activations and key/value copies inside a memory budget
    (a quarter of free memory, at most 4 GiB on CPU); the batch is halved on out-of-memory anyway."""
    cfg = getattr(config, "get_text_config", lambda: config)()
    hidden = int(getattr(cfg, "hidden_size", 1024))
    inter = int(getattr(cfg, "intermediate_size", 4 * hidden) or 4 * hidden)
    layers = int(getattr(cfg, "num_hidden_layers", 12))
    heads = int(getattr(cfg, "num_key_value_heads", None) or getattr(cfg, "num_attention_heads", 8))
    head_dim = int(getattr(cfg, "head_dim", None) or hidden // max(int(getattr(cfg, "num_attention_heads", 8)), 1))
    width = DTYPES[str(dtype).removeprefix("torch.")]
    per_token = width * (layers * 2 * heads * head_dim + 6 * hidden + 3 * inter)
    if budget_bytes is None:
        if str(device).startswith("cuda"):
            import torch

            free, _ = torch.cuda.mem_get_info(torch.device(device))
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
    cap = 65536 if str(device).startswith("cuda") else 4096  # CPU matmuls gain nothing from bigger batches
    return int(max(256, min(cap, tokens)))


MMAP_ABOVE = 32 << 20  # glibc's largest mmap threshold: blocks up to this size come from the heap
KEEP_FREED = 256 << 20  # freed memory at the top of the heap kept for the next batch, not returned to the system
_malloc_tuned: bool | None = None


def tune_malloc() -> bool:
    """Make glibc keep freed blocks of up to 32 MiB, and up to 256 MiB of freed memory, for reuse; once per process,
    on Linux with glibc; whether it did. By default glibc serves blocks above an adaptive threshold (128 KiB at
    first) by mmap and hands heap tops beyond twice that back on free, so batches of varying shape get their
    activations as fresh pages the kernel faults in and zeroes: 260,000-720,000 page faults while scoring the
    few-shot benchmark, 2.7 million on the long-prompt one, 3-9% of the time (benchmarks/README); peak memory stayed
    within the run-to-run spread. Left alone where the user chose: any MALLOC_* variable or glibc.malloc tunable set,
    another allocator preloaded (jemalloc, tcmalloc), or PROMPTKIT_MALLOC=system."""
    global _malloc_tuned
    if _malloc_tuned is None:
        _malloc_tuned = False
        chosen = os.environ.get("PROMPTKIT_MALLOC") == "system" or "LD_PRELOAD" in os.environ \
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", "") or any(name.startswith("MALLOC_") for name in os.environ)
        if sys.platform.startswith("linux") and not chosen:
            try:
                libc = ctypes.CDLL(None)
                if hasattr(libc, "gnu_get_libc_version"):  # glibc; musl's mallopt does nothing
                    m_trim_threshold, m_mmap_threshold = -1, -3
                    _malloc_tuned = bool(libc.mallopt(m_mmap_threshold, MMAP_ABOVE)) \
                        and bool(libc.mallopt(m_trim_threshold, KEEP_FREED))
            except (OSError, AttributeError):
                pass
    return _malloc_tuned


def read_config(folder: Path) -> dict:
    """A model folder's config.json as JSON (no transformers needed); {} where it cannot be read as an object."""
    try:
        raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


class Fields:
    """A config.json's fields as attributes (what auto_batch_tokens reads), its `text_config` as the text config."""

    def __init__(self, raw: dict):
        self.__dict__.update(raw)

    def get_text_config(self):
        text = self.__dict__.get("text_config")
        return Fields(text) if isinstance(text, dict) else self


def architecture(raw: dict, seq2seq: bool) -> str | None:
    """The class a config.json names, where it is the kind this backend loads (a causal or seq2seq LM); None
    otherwise (then the loaded model's class is reported)."""
    names = raw.get("architectures") or []
    name = names[0] if names and isinstance(names[0], str) else None
    return name if name and name.endswith("ForConditionalGeneration" if seq2seq else "ForCausalLM") else None
