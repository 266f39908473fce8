"""Loading for the Hugging Face backend: the settings that follow from a model's configuration (transformers'
AutoConfig), the weights from their files to where they run, and what the kernels need to know about the loaded
model (the name of its cache argument, the attention FLOPs per key, bf16-mixed's bfloat16 output matrix). torch
and transformers are imported inside the functions: only a load needs them."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

from ...errors import ModelError
from .setup import LOAD_AS, tune_malloc

if TYPE_CHECKING:
    import torch


def load_error(spec: str, exc: Exception) -> ModelError:
    """The error a user sees when transformers cannot load `spec`: its first line, and what to pass instead."""
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ModelError(f"could not load model '{spec}': {first}. Pass a hub id (needs the Hub), a local model "
                      "directory or a .gguf file.")


def configure(spec: str, location: str, trust_remote_code: bool, share_prompts: bool, pack_prompts: bool) -> dict:
    """The settings that follow from the model's configuration: `seq2seq`, `config`, `max_length`, `window`,
    `share_limit`, `share_prompts`, `pack_prompts` (as asked, never for an encoder-decoder model), `sliding_masks`
    and `pack_depth`."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise load_error(spec, exc) from None
    seq2seq = bool(getattr(config, "is_encoder_decoder", False))
    max_length = int(getattr(config, "max_position_embeddings", 0) or 2048)
    # prompt sharing reads continuations from the prompt's key/value cache; keep it inside
    # the smallest attention window so sliding-window layers see exactly what a full pass sees
    window = int(getattr(config, "sliding_window", None) or max_length)
    share_limit = min(max_length, window - 1)
    # sliding-window layers get a mask of their own when the model takes one mask per layer type (transformers'
    # `layer_types`); otherwise a packed tree stays inside the window, where the two masks are the same
    layer_types = set(getattr(getattr(config, "get_text_config", lambda: config)(), "layer_types", None) or [])
    sliding_masks = window < max_length and "sliding_attention" in layer_types
    return {
        "seq2seq": seq2seq, "config": config, "max_length": max_length, "window": window, "share_limit": share_limit,
        "share_prompts": share_prompts and not seq2seq,
        # score_packed packs prompt groups up to packing.max_tree tokens (wider ones take the cached or unshared
        # path) into rows as wide as a batch
        "pack_prompts": pack_prompts and not seq2seq,
        "sliding_masks": sliding_masks,
        "pack_depth": max_length if sliding_masks or window >= max_length else share_limit,
    }


def torch_dtype(dtype: str) -> torch.dtype:
    """The dtype the weights load in (bf16-mixed loads float32; see the backend's precision())."""
    import torch

    return getattr(torch, LOAD_AS.get(dtype, dtype))


def load_model(spec: str, location: str, *, seq2seq: bool, dtype: str, device: str, device_map: str | dict | None,
               trust_remote_code: bool, progress: bool):
    """The model's weights loaded where they run, in eval mode; with the device its inputs go to (under a device
    map, accelerate's choice: where the input embeddings are). bf16-mixed's linear layers but the output matrix
    are stored in bfloat16, so autocast does not cast them again on every forward."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM
    from transformers.utils import logging as hf_logging

    loader = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    if device == "cpu":
        tune_malloc()
    placement = {"device_map": device_map} if device_map else {}
    bars = hf_logging.is_progress_bar_enabled()
    if not progress:  # transformers' own loading bars show only when progress is wanted
        hf_logging.disable_progress_bar()
    try:
        model = loader.from_pretrained(location, dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code, **placement)
    except (OSError, ValueError) as exc:
        raise load_error(spec, exc) from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    if device_map:  # accelerate placed the layers; inputs go where the embeddings are
        device = str(model.get_input_embeddings().weight.device)
    else:
        model.to(torch.device(device))
    model.eval()
    if dtype == "bf16-mixed":
        head = model.get_output_embeddings()
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module is not head:
                module.to(torch.bfloat16)
    return model, device


def cache_arg(model) -> str:
    """The forward argument that takes a key/value cache: transformers 5.x renamed `past_key_values` to `cache`."""
    params = inspect.signature(model.base_model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def attention_per_key(model) -> float:
    """FLOPs of attention per key a token attends to, as a share of the FLOPs of the weights per token."""
    cfg = getattr(model.config, "get_text_config", lambda: model.config)()
    heads = int(getattr(cfg, "num_attention_heads", 8) or 8)
    head_dim = int(getattr(cfg, "head_dim", None) or int(getattr(cfg, "hidden_size", 512)) // heads)
    layers = int(getattr(cfg, "num_hidden_layers", 12) or 12)
    emb = model.get_input_embeddings().weight.numel()
    weights = max(1, sum(p.numel() for p in model.parameters()) - emb)
    return 4 * heads * head_dim * layers / (2 * weights)


def mapped_class(config, seq2seq: bool) -> str | None:
    """The LM class transformers' table maps the configuration's model type to (for a config.json that names none)."""
    from transformers.models.auto import modeling_auto as auto

    table = auto.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING_NAMES if seq2seq else auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    return table.get(getattr(config, "model_type", None))
