"""Shared fixtures: a tiny randomly initialised causal LM with a real (trained) tokenizer, no network."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CORPUS = [
    "Question: Is the sky blue? Answer: yes", "Q: Is grass red? A: no", "Input: two plus two Output: four",
    "Options: A. yes B. no C. maybe", "Choose the correct answer from the options.", "The answer is A",
    "Read the input and give the correct answer.", "Text: the cat sat on the mat -> positive negative neutral",
    "Determine whether the following statement is plausible.", "Paris London Berlin Madrid Rome",
] * 20


def build_tiny_model(folder: Path) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    from tokenizers.processors import TemplateProcessing

    tok.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
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
    import promptkit.pipeline

    monkeypatch.setattr(promptkit.pipeline, "default_cache_path", lambda: tmp_path / "results.sqlite")


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
