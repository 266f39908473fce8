"""Demonstration sources compared: per prompt, its score with no, real and synthetic demonstrations and the
paired differences between them (runs whose variants have a `demo_source` axis)."""

from __future__ import annotations

import pandas as pd

from ..errors import PromptkitError
from ..prompts.variants import variant_id
from .stats import Scores, compare


def comparison(results, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per prompt (a variant's axis values apart from `demo_source`): its score with no, real and synthetic
    demonstrations (mean accuracy over tasks, each split), and the paired differences synthetic − none and
    synthetic − real with a 95% paired-bootstrap CI over the run's examples (selection and held-out tasks)."""
    view = results.ranked()
    groups: dict[str, dict[str, str]] = {}
    described: dict[str, str] = {}
    for vid, info in view.variants.items():
        source = info["values"].get("demo_source")
        if source is None:
            continue
        rest = {k: v for k, v in info["values"].items() if k != "demo_source"}
        base = variant_id(info["family"], rest)
        groups.setdefault(base, {})[source] = vid
        described[base] = ", ".join(f"{k}={v!r}" for k, v in rest.items())
    if not any(len(g) > 1 for g in groups.values()):
        raise PromptkitError("this run has no variants that differ only in `demo_source`; add the axis "
                             "demo_source: [none, real, synthetic] to a few-shot family")
    rows = view.rows
    per = rows.groupby(["variant", "split", "task"])["accuracy"].mean().groupby(["variant", "split"]).mean()
    scores = {split: Scores.from_rows(rows[rows["split"] == split], view.tasks) for split in ("selection", "held_out")
              if (rows["split"] == split).any()}
    out = []
    for base, by_source in groups.items():
        entry = {"prompt": base, "axes": described[base]}
        for split in scores:
            for source in ("none", "real", "synthetic"):
                if source in by_source:
                    entry[f"{split}_{source}"] = per.get((by_source[source], split))
            for other in ("none", "real"):
                if "synthetic" in by_source and other in by_source:
                    table = compare(scores[split], by_source["synthetic"], by_source[other], n_boot, seed)
                    total = table.iloc[-1]
                    entry[f"{split}_synthetic_vs_{other}"] = total["diff"]
                    entry[f"{split}_synthetic_vs_{other}_ci"] = (round(total["ci_low"], 4), round(total["ci_high"], 4))
        out.append(entry)
    return pd.DataFrame(out)
