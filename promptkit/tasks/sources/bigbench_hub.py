"""BIG-bench tasks from the Hugging Face Hub's parquet copy, read through `datasets` (the resolver in
bigbench.py caches what this returns).

The copy (`tasksource/bigbench`) has one config per task, a folder `<task>/` holding its splits (train
and validation). Its main branch holds a loading script, which datasets>=4 refuses, so it is read at
the Hub's parquet export (refs/convert/parquet: `<task>/<split>/0000.parquet`). A task with subtasks is
one config whose rows mix the subtasks without saying which is which, so `task/subtask` names are not
served from here. Columns: `inputs` (BIG-bench's formatted input), `targets` (reference answers),
`multiple_choice_targets` and `multiple_choice_scores` (the choices and their scores), `idx`.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

HUB_DATASET = "tasksource/bigbench"
HUB_REVISION = "refs/convert/parquet"
HUB_TIMEOUT_S = 60  # per config (PROMPTKIT_BIGBENCH_HUB_TIMEOUT); after one timeout the Hub is not asked again


class Unavailable(Exception):
    """The Hub copy cannot give a task; the message is the reason."""


class HubDown(Unavailable):
    """The Hub did not answer (in time, or at all): it is not asked for the other tasks."""


def hub_id() -> str:
    """The dataset id or local folder to read: PROMPTKIT_BIGBENCH_HUB, else the default copy."""
    return os.environ.get("PROMPTKIT_BIGBENCH_HUB") or HUB_DATASET


def _revision(hub: str) -> str | None:
    """PROMPTKIT_BIGBENCH_HUB_REVISION, else the parquet export of the default copy (a local folder and
    another dataset id are read as they are)."""
    if os.environ.get("PROMPTKIT_BIGBENCH_HUB_REVISION"):
        return os.environ["PROMPTKIT_BIGBENCH_HUB_REVISION"]
    return HUB_REVISION if hub == HUB_DATASET else None


def _offline_env() -> str:
    """The offline variable that is set ('' if none)."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}:
            return var
    return ""


def blocked(hub: str) -> str:
    """Why the Hub cannot be asked at all ('' if it can). Offline, `datasets` still reads its own cache."""
    try:
        import datasets
    except ImportError:
        return "the `datasets` package is not installed (pip install datasets)"
    if Path(hub).expanduser().is_dir():
        return ""
    offline = _offline_env()
    if offline and not datasets.config.HF_HUB_OFFLINE:  # set after `datasets` was imported: do not go online
        return f"{offline} is set"
    return ""


def check_name(name: str) -> None:
    """The copy has whole tasks only: its config for a task with subtasks merges them, unlabelled."""
    if "/" in name:
        raise Unavailable(f"has no config for the subtask {name} (its config {name.split('/')[0]} merges all "
                          "subtasks without saying which row is which)")


def fetch(hub: str, name: str) -> tuple[dict, str]:
    """One task as a task.json dict (every split's rows, train first) and its origin."""
    revision = _revision(hub)
    local = Path(hub).expanduser()
    data = _load(str(local) if local.is_dir() else hub, name, revision)
    splits = sorted(data, key=lambda s: (s != "train", s != "validation", s))
    examples = [ex for split in splits for row in data[split] if (ex := hub_example(row))]
    if not examples:
        raise Unavailable(f"config {name} has no rows with an input and an answer")
    at = f", revision {revision}" if revision else ""
    return {"name": name, "examples": examples}, f"hub {hub} (config {name}, split {'+'.join(splits)}{at})"


def _load(hub: str, config: str, revision: str | None):
    """All splits of one config (the folder `<config>/`, with `<split>/*.parquet` or `<split>-*.parquet`
    files) through `datasets.load_dataset`, given HUB_TIMEOUT_S (a thread still running then is left to
    finish on its own)."""
    import datasets

    timeout = float(os.environ.get("PROMPTKIT_BIGBENCH_HUB_TIMEOUT") or HUB_TIMEOUT_S)
    box: dict = {}

    def run() -> None:
        try:
            box["data"] = datasets.load_dataset(hub, data_dir=config, revision=revision)
        except Exception as exc:  # every failure is a reason to try the next way
            box["error"] = exc

    print(f"promptkit: loading BIG-bench task {config} from {hub} through `datasets`", file=sys.stderr, flush=True)
    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise HubDown(f"no answer within {timeout:g} s (PROMPTKIT_BIGBENCH_HUB_TIMEOUT); not asked for the rest")
    if "error" in box:
        exc = box["error"]
        reason = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:300]}"
        if _offline_env():
            reason = f"{_offline_env()} is set and the datasets cache has no copy: {reason}"
        raise (HubDown if isinstance(exc, ConnectionError) else Unavailable)(reason)
    return box["data"]


def hub_example(row: dict) -> dict | None:
    """One row as a task.json example: `target_scores` from the scored choices, `target` from the
    reference answers (a multiple-choice row has both). None for a row with neither."""
    choices = [str(c) for c in row.get("multiple_choice_targets") or []]
    scores = list(row.get("multiple_choice_scores") or [])
    example: dict = {"input": _unformat(str(row.get("inputs") or ""), choices)}
    if choices and len(choices) == len(scores):
        target_scores: dict[str, int] = {}
        for choice, score in zip(choices, scores):
            target_scores[choice] = max(int(score), target_scores.get(choice, int(score)))
        example["target_scores"] = target_scores
    targets = [str(t) for t in row.get("targets") or [] if str(t).strip()]
    if targets:
        example["target"] = targets
    return example if example["input"].strip() and len(example) > 1 else None


def _unformat(text: str, choices: list[str]) -> str:
    """Undo BIG-bench's default formatting of an input ("Q: <input>", then one "  choice: X" line per
    choice, then "A:"), so prompts format it themselves. A task with its own prefixes is left as is."""
    lines = text.strip().split("\n")
    if len(lines) < 2 or not lines[0].startswith("Q: ") or lines[-1].strip() != "A:":
        return text.strip()
    lines.pop()
    stripped = {c.strip() for c in choices}
    while len(lines) > 1 and lines[-1].strip().startswith("choice: ") and lines[-1].strip()[8:].strip() in stripped:
        lines.pop()
    lines[0] = lines[0][3:]
    return "\n".join(lines).strip()
