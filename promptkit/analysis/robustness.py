"""Robustness to noisy inputs, prompt by prompt: each variant's score clean and under every noise spec
of the run, the drop, the worst case over perturbations, and whether the best clean prompt stays best;
and the run's rows collapsed so that the ranking can be by clean, noisy or combined scores."""

from __future__ import annotations

import pandas as pd

from ..errors import PromptkitError
from ..prompts.noise import CLEAN, parse
from ..prompts.variants import variant_id

CRITERIA = ("clean", "noisy", "combined")


def _label(results) -> pd.DataFrame:
    """The rows with each variant's base (the id of its clean copy) and its noise spec."""
    info = results.variants
    rows = results.rows
    noise = {v: i["values"].get("noise", CLEAN) for v, i in info.items()}
    base = {v: variant_id(i["family"], {k: x for k, x in i["values"].items() if k != "noise"}) for v, i in info.items()}
    out = rows.assign(base=rows["variant"].map(base), noise=rows["variant"].map(noise))
    if out["base"].isna().any():
        raise PromptkitError("the run's rows name variants that variants.json does not list; the run directory is incomplete")
    return out


def robustness(results) -> pd.DataFrame:
    """One row per base variant × noise spec: its score (mean accuracy over tasks) on the selection and
    the held-out tasks, and the drop from its clean score."""
    df = _label(results)
    specs = results.config.get("noise") or sorted(set(df["noise"]) - {CLEAN})
    if not specs:
        raise PromptkitError("this run has no noise conditions; run with --noise SPEC ... (noise=[...] in evaluate)")
    per_task = df.groupby(["base", "noise", "split", "task"])["accuracy"].mean().reset_index()
    score = per_task.groupby(["base", "noise", "split"])["accuracy"].mean().unstack("split")
    out = []
    for (b, n), row in score.iterrows():
        if n == CLEAN:
            continue
        clean = score.loc[(b, CLEAN)] if (b, CLEAN) in score.index else None
        p = parse(n)
        entry = {"variant": b, "noise": n, "kind": p.kind if p else CLEAN, "target": p.target if p else "",
                 "rate": p.rate if p else 0.0}
        for split in ("selection", "held_out"):
            if split in row:
                entry[f"{split}_clean"] = None if clean is None else clean.get(split)
                entry[f"{split}_noisy"] = row[split]
                entry[f"{split}_drop"] = None if clean is None else clean.get(split) - row[split]
        out.append(entry)
    table = pd.DataFrame(out)
    table["noise"] = pd.Categorical(table["noise"], [s for s in specs if s in set(table["noise"])], ordered=True)
    return table.sort_values(["variant", "noise"]).reset_index(drop=True)


def summary(results, split: str = "selection") -> pd.DataFrame:
    """Per base variant: clean score, mean noisy score, mean drop, the worst drop over noise specs and
    which spec, and its rank clean vs under noise (1 = best). Sorted by clean rank."""
    table = robustness(results)
    col = f"{split}_drop"
    if col not in table:
        raise PromptkitError(f"the run has no {split} tasks")
    g = table.groupby("variant", observed=True)
    worst = table.loc[g[col].idxmax()].set_index("variant")
    out = pd.DataFrame({
        "clean": g[f"{split}_clean"].first(),
        "noisy": g[f"{split}_noisy"].mean(),
        "mean_drop": g[col].mean(),
        "worst_drop": worst[col],
        "worst_noise": worst["noise"].astype(str),
    })
    out["rank_clean"] = out["clean"].rank(ascending=False, method="min").astype(int)
    out["rank_noisy"] = out["noisy"].rank(ascending=False, method="min").astype(int)
    return out.sort_values(["rank_clean", "rank_noisy"]).reset_index()


def collapse(results, how: str = "clean"):
    """Results with one row per base variant × task × example, scored by `how`: clean (the noise-free
    copy), noisy (the mean over the noise specs), combined (the mean over clean and noisy), or one noise
    spec. The ranking, statistics and report then rank prompts by that criterion."""
    df = _label(results)
    specs = set(df["noise"]) - {CLEAN}
    if how not in CRITERIA and how not in specs:
        raise PromptkitError(f"cannot rank by '{how}': use {', '.join(CRITERIA)} or one of the run's noise specs "
                             f"({', '.join(sorted(specs)) or 'none'})")
    keep = {"clean": df["noise"] == CLEAN, "noisy": df["noise"] != CLEAN, "combined": df["noise"].notna()}.get(how, df["noise"] == how)
    part = df[keep]
    if how in ("noisy", "combined"):  # a mean over conditions: the per-choice fields no longer apply,
        # so the mean is kept for every scoring mode (each mode re-scores the rows before averaging)
        from .metrics import available_modes, with_mode

        key = ["base", "task", "example"]
        part = part.copy()
        modes = available_modes(part)
        for mode in modes:
            part[f"accuracy@{mode}"] = with_mode(part, mode)["accuracy"].to_numpy()
        first = part.drop_duplicates(key).set_index(key)
        for col in ["accuracy", "accuracy_norm", *(f"accuracy@{m}" for m in modes)]:
            first[col] = part.groupby(key)[col].mean()
        first["kind"] = "aggregate"
        part = first.reset_index()
    rows = part.assign(variant=part["base"]).drop(columns=["base", "noise"]).reset_index(drop=True)
    variants = {}
    for vid, i in results.variants.items():
        if i["values"].get("noise", CLEAN) == CLEAN:
            variants[vid] = {**i, "values": {k: v for k, v in i["values"].items() if k != "noise"}}
    config = {**results.config, "ranked_by": how}
    return type(results)(rows, results.tasks, variants, config)
