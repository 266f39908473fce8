"""Shared fixtures: a tiny randomly initialised causal LM with a real (trained) tokenizer, no network."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Tests set the environment they need: a user's HF_HUB_OFFLINE=1 (common among people who work offline) is read
# by huggingface_hub when it is first imported, and made the Hub tests see no Hub. Removed before any test
# module imports it; a test that needs offline mode sets it itself.
for _name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ.pop(_name, None)

CORPUS = [
    "Question: Is the sky blue? Answer: yes", "Q: Is grass red? A: no", "Input: two plus two Output: four",
    "Options: A. yes B. no C. maybe", "Choose the correct answer from the options.", "The answer is A",
    "Read the input and give the correct answer.", "Text: the cat sat on the mat -> positive negative neutral",
    "Determine whether the following statement is plausible.", "Paris London Berlin Madrid Rome",
] * 20


def train_tokenizer(specials: list[str], template: str, **named):
    """A small byte-level BPE tokenizer trained on CORPUS; `template` adds the model's special tokens
    around a text ("<s> $A" for a BOS, "$A </s>" for T5's EOS); `named` maps bos/eos/pad/unk to them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    marks = [t for t in specials if t in template]
    tok.post_processor = TemplateProcessing(single=template, special_tokens=[(t, tok.token_to_id(t)) for t in marks])
    return PreTrainedTokenizerFast(tokenizer_object=tok, **named)


def build_tiny_model(folder: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    fast = train_tokenizer(["<pad>", "<s>", "</s>", "<unk>"], "<s> $A", bos_token="<s>", eos_token="</s>",
                           pad_token="<pad>", unk_token="<unk>")
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True)
def private_result_cache(tmp_path, monkeypatch):
    """Each test gets its own result cache, so no test is served another test's scores."""
    import promptkit.engine.cache

    monkeypatch.setattr(promptkit.engine.cache, "default_cache_path", lambda: tmp_path / "results.sqlite")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return str(build_tiny_model(tmp_path_factory.mktemp("tiny-llama")))


@pytest.fixture(scope="session")
def tiny_backend(tiny_model):
    from promptkit.backends.hf import HFBackend

    return HFBackend(tiny_model, dtype="float32", device="cpu")


def write_bigbench_task(path: Path, name: str = "toy", n: int = 6, prefix: str = "Answer the question.") -> Path:
    examples = []
    for i in range(n):
        examples.append({"input": f"Is {i} even?", "target_scores": {"yes": int(i % 2 == 0), "no": int(i % 2 == 1)}})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": name, "task_prefix": prefix, "examples": examples}))
    return path


@pytest.fixture()
def toy_suite(tmp_path) -> Path:
    """A suite of three small local tasks: two BIG-bench JSON files and one JSONL file."""
    write_bigbench_task(tmp_path / "even" / "task.json", "even", 6)
    write_bigbench_task(tmp_path / "even2" / "task.json", "even2", 4, prefix="")
    rows = [{"q": f"Capital number {i}?", "opts": ["Paris", "Rome", "Berlin"], "label": i % 3, "uid": f"c{i}"} for i in range(5)]
    (tmp_path / "capitals.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        "name: toy\n"
        "limit: 10\n"
        "selection:\n"
        "  - {name: even, source: bigbench, path: even/task.json}\n"
        "  - {name: capitals, source: files, path: capitals.jsonl, input: q, choices: opts, target: label, id: uid}\n"
        "held_out:\n"
        "  - {name: even2, source: bigbench, path: even2/task.json, cluster: parity}\n"
    )
    return suite


@pytest.fixture()
def two_templates(tmp_path) -> Path:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "plain.yaml").write_text(
        "name: plain\n"
        "axes:\n"
        "  label: ['Question:', 'Q:']\n"
        "  sep: [\"\\n\", ' ']\n"
        "prompt: '{{ label }} {{ input }}{{ sep }}Answer:'\n"
        "continuation: ' {{ choice }}'\n"
    )
    (folder / "listed.yaml").write_text(
        "name: listed\n"
        "axes:\n"
        "  style: [letters, inline]\n"
        "prompt: |-\n"
        "  {{ instruction }}\n"
        "  {{ input }}\n"
        "  {% if style == 'letters' %}{% for c in choices %}{{ loop.index0 | letter }}. {{ c }}\n"
        "  {% endfor %}{% else %}{{ choices | join(', ') }}\n"
        "  {% endif %}Answer:\n"
        "continuation: ' {{ choice }}'\n"
    )
    return folder


def write_generative_task(path: Path, name: str = "add", n: int = 12, prefix: str = "Add the numbers.") -> Path:
    """A BIG-bench-style generative task (`target` instead of `target_scores`)."""
    examples = [{"input": f"What is {i} plus 1?", "target": [str(i + 1), f"{i + 1}.0"] if i % 3 == 0 else str(i + 1)}
                for i in range(n)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"name": name, "task_prefix": prefix, "examples": examples}))
    return path


@pytest.fixture()
def gen_suite(tmp_path) -> Path:
    """A suite mixing two generative tasks (one from JSONL) with one multiple-choice task; limit 6 holds
    the rest of each task apart as demonstrations."""
    write_generative_task(tmp_path / "add" / "task.json", "add", 12)
    write_bigbench_task(tmp_path / "even" / "task.json", "even", 10)
    rows = [{"q": f"Say the word number {i}.", "a": f"word{i}"} for i in range(9)]
    (tmp_path / "say.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    suite = tmp_path / "gen_suite.yaml"
    suite.write_text(
        "name: gen\n"
        "limit: 6\n"
        "selection:\n"
        "  - {name: add, source: bigbench, path: add/task.json, metric: numeric, max_new_tokens: 5}\n"
        "  - {name: even, source: bigbench, path: even/task.json}\n"
        "held_out:\n"
        "  - {name: say, source: files, path: say.jsonl, input: q, target: a, metric: {name: contains, case: false}}\n"
    )
    return suite


@pytest.fixture()
def fewshot_templates(tmp_path) -> Path:
    folder = tmp_path / "fewshot"
    folder.mkdir()
    (folder / "shots.yaml").write_text(
        "name: shots\n"
        "header: '{{ instruction }}'\n"
        "generation: {stop: [\"\\n\"], max_new_tokens: 8}\n"
        "axes:\n"
        "  shots: [0, 2]\n"
        "  demo_selection: [first_k, balanced]\n"
        "  demo_separator: [\"\\n\\n\"]\n"
        "prompt: \"Q: {{ input }}\\nA:\"\n"
        "continuation: ' {{ choice }}'\n"
    )
    return folder


def build_tiny_t5(folder: Path) -> Path:
    """A tiny randomly initialised T5 (encoder-decoder) with a small trained tokenizer, no network."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    fast = train_tokenizer(["<pad>", "</s>", "<unk>"], "$A </s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    config = T5Config(vocab_size=len(fast), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
                      pad_token_id=fast.pad_token_id, eos_token_id=fast.eos_token_id,
                      decoder_start_token_id=fast.pad_token_id)
    torch.manual_seed(0)
    T5ForConditionalGeneration(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> str:
    return str(build_tiny_t5(tmp_path_factory.mktemp("tiny-t5")))
