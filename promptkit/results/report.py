"""The self-contained HTML report of a run (images inline, no network) and the notebook display."""

from __future__ import annotations

import base64
import html
import io
import json
import time
import warnings
from pathlib import Path

import pandas as pd

from ..analysis.names import MEANING, num
from ..errors import PromptkitError

from . import plots
from .ownership import write_atomic

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 1200px;
       color: #1d1d1f; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.85rem; margin: 0.6rem 0; }
th, td { padding: 0.25rem 0.55rem; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f5f5f7; position: sticky; top: 0; } td.l, th.l { text-align: left; }
tr.tied td { background: #eef5ff; } tr.chosen td { font-weight: 600; }
.kpi { display: flex; gap: 1rem; flex-wrap: wrap; margin: 1rem 0; }
.kpi div { background: #f5f5f7; border-radius: 8px; padding: 0.6rem 1rem; min-width: 10rem; }
.kpi b { display: block; font-size: 1.3rem; } .kpi span { color: #555; font-size: 0.8rem; }
pre { background: #f8f8f8; border: 1px solid #e5e5e5; padding: 0.7rem; white-space: pre-wrap; font-size: 0.82rem; }
img { max-width: 100%; height: auto; } details { margin: 0.4rem 0; } summary { cursor: pointer; }
.note { color: #555; font-size: 0.9rem; }
table.rules th { white-space: normal; max-width: 7rem; } table.rules td.choice { max-width: 26rem; overflow-wrap: anywhere; }
"""

# marks the page once every image has decoded: lets a headless browser check the report
CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0 && i.naturalHeight > 0; });
  document.body.setAttribute('data-images', String(imgs.length));
  document.body.setAttribute('data-images-decoded', String(ok.length));
  var rules = Array.from(document.querySelectorAll('table.rules'));  // how far right the rules tables reach (CSS px)
  if (rules.length) { document.body.setAttribute('data-rules-right', String(Math.ceil(Math.max.apply(null,
    rules.map(function (t) { return t.getBoundingClientRect().right; }))))); }
});
"""


def figure_png(fig) -> str:
    """A Figure as a base64 PNG data URI. The plots are sized to their labels; should a layout still not fit,
    matplotlib's warning about it is kept out of the terminal (the figure is drawn all the same)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="constrained_layout not applied", category=UserWarning)
        fig.savefig(buffer, format="png", dpi=110)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def esc(value) -> str:
    return html.escape(str(value))


def fmt(value, digits: int = 3) -> str:
    if isinstance(value, float):
        return "–" if value != value else num(value, digits)
    return esc(value)


def ranking_html(analysis, limit: int | None = None, chosen: str | None = None) -> str:
    agg = analysis.aggregate
    table = analysis.ranking if limit is None else analysis.ranking.head(limit)
    held = f"held_out_{agg}"
    ranks = agg != "mean_rank"  # ranked by mean rank, the aggregate column is the mean rank
    head = (["rank", "variant", agg, "95% CI (examples)", "95% CI (tasks)"] + (["mean rank"] if ranks else [])
            + (["held-out"] if held in table else []) + ["tied"])
    rows = []
    for _, r in table.iterrows():
        cls = " ".join(c for c, on in (("tied", r["tied_with_best"]), ("chosen", r["variant"] == chosen)) if on)
        cells = [f"<td>{r['rank']}</td>", f"<td class='l'>{esc(r['variant'])}</td>", f"<td>{fmt(r[agg])}</td>",
                 f"<td>[{fmt(r['ci_examples_low'])}, {fmt(r['ci_examples_high'])}]</td>",
                 f"<td>[{fmt(r['ci_tasks_low'])}, {fmt(r['ci_tasks_high'])}]</td>"]
        if ranks:
            cells.append(f"<td>{fmt(r.get('mean_rank', float('nan')), 2)}</td>")
        if held in table:
            cells.append(f"<td>{fmt(r[held])}</td>")
        cells.append(f"<td>{'yes' if r['tied_with_best'] else ''}</td>")
        rows.append(f"<tr class='{cls}'>" + "".join(cells) + "</tr>")
    header = "".join(f"<th class='{'l' if h == 'variant' else ''}'>{esc(h)}</th>" for h in head)
    return f"<table class='ranking'><thead><tr>{header}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def frame_html(frame: pd.DataFrame, left: tuple[str, ...] = ()) -> str:
    header = "".join(f"<th class='{'l' if c in left else ''}'>{esc(c)}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td class='{'l' if c in left else ''}'>{fmt(v)}</td>" for c, v in row.items()) + "</tr>"
                   for _, row in frame.iterrows())
    return f"<table><thead><tr>{header}</tr></thead><tbody>{body}</tbody></table>"


def render_sample(results, variant: str) -> dict | None:
    """Re-render a variant's first example from its template file and the run's suite (for runs
    saved without stored samples); None when either is no longer available."""
    from ..errors import PromptkitError
    from ..prompts.render import render, sample_of
    from ..tasks.suites import load_suite, load_tasks
    from ..prompts.templates import load_family
    from ..prompts.variants import Variant

    info = results.variants.get(variant, {})
    try:
        family = load_family(info["path"])
        suite = load_suite(results.config["suite"]["path"])
        name = next(iter(results.tasks))
        task = load_tasks(suite, limit=results.config.get("limit"), seed=results.config.get("seed", 0), names=[name])[0]
        example = task.examples[0]
        request = render(Variant(variant, family, info["values"]), task, example, results.config.get("seed", 0))
    except (PromptkitError, KeyError, OSError, StopIteration):
        return None
    sample = sample_of(task, example, request)
    if request.messages is not None:  # the model's chat template is not at hand here: show the turns
        sample["prompt"] = "\n".join(f"[{role}]\n{text}" for role, text in request.messages)
    return sample


def sample_html(results, variant: str) -> str:
    sample = results.variants.get(variant, {}).get("sample") or render_sample(results, variant)
    if not sample:
        return "<p class='note'>(no rendered example stored for this variant)</p>"
    conts = "".join(f"<li><code>{esc(repr(c))}</code>{' ← correct' if i in sample.get('correct', []) else ''}</li>"
                    for i, c in enumerate(sample["continuations"]))
    values = ", ".join(f"{k}={v!r}" for k, v in results.variants[variant]["values"].items())
    head = f"<p class='note'>{esc(variant)} [{esc(values)}] on task {esc(sample['task'])}, example {esc(sample['example'])}:</p>"
    if "references" in sample:
        refs = "".join(f"<li><code>{esc(repr(r))}</code></li>" for r in sample["references"])
        return (head + f"<pre>{esc(sample['prompt'])}</pre><p class='note'>generated greedily after the prompt (up to "
                f"{esc(sample.get('max_new_tokens'))} tokens, cut at {esc(', '.join(map(repr, sample.get('stop', []))) or 'nothing')}); "
                f"references:</p><ul>{refs}</ul>")
    return head + f"<pre>{esc(sample['prompt'])}</pre><p class='note'>continuations scored after the prompt:</p><ul>{conts}</ul>"


def notebook_html(results) -> str:
    """Compact display for Jupyter: ranking with CIs, the tie note, and the best prompt's text."""
    a = results.summary_analysis()
    top = a.ranking["variant"].iloc[0]
    tied = a.tied_with_best()
    held = a.summary
    note = (f"<p>{len(tied)} of {len(a.ranking)} variants are statistically tied with the top one "
            f"(Friedman/Nemenyi, alpha 0.05).</p>")
    if a.protocol == "split" and len(a.folds):
        row = a.folds.iloc[0]
        note += (f"<p>Chosen on selection tasks: <b>{esc(row['chosen'])}</b>, held-out {a.aggregate} {fmt(row['chosen_held_out'])} "
                 f"[{fmt(held['chosen_ci'][0])}, {fmt(held['chosen_ci'][1])}], regret vs hindsight-best {fmt(row['regret'])}.</p>")
    return (f"<div><p><b>promptkit results</b>: {len(results.variants)} variants × {len(results.tasks)} tasks, "
            f"model {esc(results.config.get('model', {}).get('model', '?'))}</p>"
            + ranking_html(a, limit=10) + note + "<p><b>Best prompt</b></p>" + sample_html(results, top) + "</div>")


def robustness_html(full) -> str:
    """The robustness section: per variant, the drop from clean to each noise spec (selection and held-out
    tasks), the worst case, and whether the best clean prompt stays best under noise."""
    table = full.robustness()
    parts = [f"<h2>Robustness to noisy inputs</h2><p>Every variant was also run under {len(full.config['noise'])} noise "
             f"condition(s) ({esc(', '.join(full.config['noise']))}) on the same examples with the same noise. "
             "Scores are mean accuracy over tasks; drop = clean − noisy (positive: the noise hurts).</p>"]
    for split in ("selection", "held_out"):
        if f"{split}_drop" not in table:
            continue
        summ = full.robustness_summary(split)
        best = summ.iloc[0]
        parts.append(f"<p><b>{split.replace('_', '-')} tasks.</b> The best clean prompt, {esc(best['variant'])}, "
                     f"scores {fmt(best['clean'])} clean and {fmt(best['noisy'])} under noise on average (drop "
                     f"{fmt(best['mean_drop'])}, worst {fmt(best['worst_drop'])} under {esc(best['worst_noise'])}); "
                     f"under noise it ranks {int(best['rank_noisy'])} of {len(summ)}.</p>")
        parts.append(frame_html(summ, left=("variant", "worst_noise")))
    wide = table.pivot_table(index="variant", columns="noise", values=[c for c in ("selection_drop", "held_out_drop") if c in table],
                             observed=True)
    wide.columns = [f"{a.removesuffix('_drop')} drop · {b}" for a, b in wide.columns]
    parts.append("<details><summary>drop per variant and noise</summary>"
                 + frame_html(wide.reset_index(), left=("variant",)) + "</details>")
    return "\n".join(parts)


def synthetic_html(results) -> str:
    """The synthetic-data section: every prompt with no, real and synthetic demonstrations, the paired
    differences with CIs, and the demonstrations themselves, so a reader sees what the model was shown."""
    parts = ["<h2>Demonstrations: none, real or synthetic</h2>"]
    try:
        table = results.demo_sources(n_boot=500)
    except PromptkitError as exc:
        return parts[0] + f"<p class='note'>{esc(exc)}</p>"
    parts.append("<p>Mean accuracy over tasks for each prompt with each demonstration source; the differences are "
                 "paired over the same examples, with 95% bootstrap CIs (an interval that excludes 0 is a real "
                 "difference at this sample size).</p>")
    shown = table.copy()
    for col in [c for c in shown.columns if c.endswith("_ci")]:
        shown[col] = shown[col].map(lambda ci: f"[{ci[0]:.3f}, {ci[1]:.3f}]" if isinstance(ci, tuple) else "")
    parts.append(frame_html(shown, left=("prompt",)))
    info = results.config.get("synthetic")
    if info:
        counts = pd.DataFrame(info["counts"]).T.reset_index().rename(columns={"index": "task"})
        parts.append(f"<p>Synthetic demonstrations: {info['n']} written per task by {esc(info['writer'])} (seed "
                     f"{info['seed']}), then filtered ({esc(', '.join(info['filters']))}); remaining after each step:</p>")
        parts.append(frame_html(counts, left=("task",)))
        demos = pd.DataFrame(info["candidates"])
        for task, part in demos.groupby("task", sort=False):
            parts.append(f"<details><summary>{esc(task)}: {int((part['dropped_by'] == '').sum())} kept of {len(part)}</summary>"
                         + frame_html(part[["answer", "input", "dropped_by"]], left=("answer", "input", "dropped_by"))
                         + "</details>")
        parts.append("<p class='note'>All of them, kept or not, are in the run directory's <code>synthetic/</code> "
                     "folder (datasets.load_from_disk).</p>")
    return "\n".join(parts)


def transfer_html(full, aggregate: str, mode: str) -> str:
    """A run with several models: the transfer heatmap, per-model rankings side by side, τ between models,
    axis agreement, and what the cross-model prompt costs on each model."""
    t = full.transfer_analysis(aggregate, mode, n_boot=500)
    side = pd.DataFrame({m: full.for_model(m).ranking()["variant"].tolist() for m in t.models})
    side.insert(0, "rank", range(1, len(side) + 1))
    parts = ["<h2>Across models</h2>",
             f"<p>{len(t.models)} models: {esc(', '.join(t.models))}. A prompt chosen on one model's selection tasks, "
             f"scored on another's held-out tasks; regret is what it gives up against that model's own best "
             f"({esc(aggregate)}). 'all but B' chooses on every other model.</p>",
             f"<figure><img alt='transfer' src='{figure_png(plots.transfer_heatmap(t))}'><figcaption class='note'>"
             "Regret of transferred prompts (0 = as good as the target model's own best)</figcaption></figure>",
             frame_html(t.matrix, left=("chosen_on", "scored_on", "chosen", "best")),
             "<h3>Rankings side by side (selection tasks)</h3>", frame_html(side, left=tuple(t.models)),
             "<h3>Rank agreement between models (Kendall τ, 95% CI)</h3>", frame_html(t.tau, left=("model_a", "model_b")),
             f"<h3>The prompt that holds across models: {esc(t.chosen)}</h3>"
             f"<p class='note'>It maximizes the {esc(t.how)} over models of the selection {esc(aggregate)}; the cost columns "
             "are each model's own best minus this prompt.</p>", frame_html(t.cross, left=("model", "cross_model_prompt", "own_best"))]
    if not t.axes.empty:
        parts += ["<h3>Does each axis's best value agree across models?</h3>", frame_html(t.axes, left=("family", "axis"))]
    return "\n".join(parts)


def parse_failures_html(results) -> str:
    """Multiple choice scored by generation: each variant's share of answers that named no choice (scored wrong)."""
    table = results.ranking()
    if "parse_failure_rate" not in table:
        return ""
    frame = table[["variant", "parse_failure_rate"]].sort_values("parse_failure_rate", ascending=False)
    return ("<p class='note'>Multiple-choice examples were scored by generation: the model wrote an answer, which was "
            "mapped back to a choice. An answer that named no choice counts as wrong; its share per variant:</p>"
            + frame_html(frame, left=("variant",)))


def report_html(results, analysis=None, title: str = "promptkit report", full=None) -> str:
    """The report of `results`; `full`, when given, is the run before rank_by() collapsed its noise
    conditions, for the robustness section."""
    a = analysis or results.summary_analysis()
    cfg = results.config
    model = cfg.get("model", {})
    s = a.summary
    chosen = a.folds["chosen"].iloc[0] if a.protocol == "split" and len(a.folds) else a.ranking["variant"].iloc[0]
    parts = [f"<h1>{esc(title)}</h1>",
             f"<p class='sub'>{esc(cfg.get('suite', {}).get('name', ''))} · model {esc(model.get('model', '?'))} "
             f"({esc(model.get('dtype', ''))}, {esc(model.get('device', ''))}) · {len(results.variants)} variants × "
             f"{len(results.tasks)} tasks · written {time.strftime('%Y-%m-%d %H:%M')}</p>"]
    # --- headline
    if s.get("use"):
        u = s["use"]
        parts.append(f"<p><b>Use this prompt: {esc(u['label'])}</b> (rule {esc(u['rule'])}, {esc(u['cost'])}× calls per "
                     f"example; held-out mean_norm {fmt(u.get('held_out_mean_norm'))}). Why: {esc(u['why'])}.</p>")
    if a.protocol == "split" and len(a.folds):
        row = a.folds.iloc[0]
        parts.append("<div class='kpi'>"
                     f"<div><span>chosen on selection tasks</span><b>{esc(row['chosen'])}</b></div>"
                     f"<div><span>its held-out {esc(a.aggregate)} (95% CI)</span><b>{fmt(row['chosen_held_out'])}</b>"
                     f"[{fmt(s['chosen_ci'][0])}, {fmt(s['chosen_ci'][1])}]</div>"
                     f"<div><span>median variant, held out</span><b>{fmt(row['median_held_out'])}</b></div>"
                     f"<div><span>best in hindsight, held out</span><b>{fmt(row['best_held_out'])}</b>{esc(row['best'])}</div>"
                     f"<div><span>regret (95% CI)</span><b>{fmt(row['regret'])}</b>[{fmt(s['regret_ci'][0])}, {fmt(s['regret_ci'][1])}]</div>"
                     "</div>")
        parts.append(f"<p class='note'>{esc(a.aggregate)}: {esc(MEANING.get(a.aggregate, a.aggregate))}. "
                     f"Default variant {esc(s.get('default_variant'))} scores {fmt(row.get('default_held_out', float('nan')))} held out. "
                     "The CIs resample examples within every task and re-choose the prompt in every replicate.</p>")
    parts.append(generalization_html(a))
    # --- ranking
    tied = a.tied_with_best()
    fr = a.friedman
    parts.append(f"<h2>Ranking</h2><p>Ranked by {esc(a.aggregate)} on the {len(a.ranking_tasks)} selection tasks "
                 f"({esc(a.mode)} log-likelihood scoring). Shaded rows are statistically tied with the top variant"
                 + (f" (Friedman p = {fr.p_value:.2g}; Nemenyi critical difference {fr.critical_difference:.2f} mean ranks)" if fr else "")
                 + f": {len(tied)} of {len(a.ranking)}.</p>")
    parts.append(ranking_html(a, chosen=chosen))
    parts.append(parse_failures_html(results))
    if full is not None and full.config.get("noise"):
        parts.append(f"<p class='note'>Ranked by the {esc(results.config.get('ranked_by', 'clean'))} score.</p>")
        parts.append(robustness_html(full))
    if any("demo_source" in v.get("values", {}) for v in results.variants.values()):
        parts.append(synthetic_html(results))
    if full is not None and full.models:
        parts.append(transfer_html(full, a.aggregate, a.mode))
    # --- plots
    figures = [("Accuracy by variant and task", plots.heatmap(results)),
               ("Critical-difference diagram", plots.cd_diagram(a)),
               ("Does the selection score predict the held-out score?", plots.selection_vs_held_out(results, a.aggregate)),
               ("Prompt sensitivity per task", plots.sensitivity(results)),
               ("Which axis matters", plots.axis_effects(a))]
    parts.append("<h2>Plots</h2>")
    for caption, fig in figures:
        parts.append(f"<figure><img alt='{esc(caption)}' src='{figure_png(fig)}'><figcaption class='note'>{esc(caption)}</figcaption></figure>")
    # --- top variants' text
    parts.append("<h2>The top variants, as the model sees them</h2>")
    for variant in a.ranking["variant"].head(3):
        parts.append(sample_html(results, variant))
    # --- sensitivity
    parts.append("<h2>Sensitivity</h2><p>Per task: how far apart the variants are (spread = max − min, std) and "
                 "how often two variants disagree on the same example (instance sensitivity).</p>")
    parts.append(frame_html(a.sensitivity, left=("task",)))
    if not a.axes.empty:
        parts.append("<p>Axis main effects: the share of a family's variance (in mean_norm over all tasks) explained "
                     "by each axis. With few sampled variants per family these are rough; run more variants "
                     "(--max-variants 0) for a full design.</p>")
        parts.append(frame_html(a.axes.drop(columns=["value_means"]), left=("family", "axis", "best_value")))
    parts.append("<h2>Template families and scoring modes</h2>")
    parts.append(frame_html(a.families, left=("family",)))
    parts.append(frame_html(a.modes, left=("mode", "best_variant")))
    # --- per-task drill-down
    parts.append("<h2>Per task</h2>")
    by_task = results.by_task()
    for task, info in results.tasks.items():
        if task not in by_task:
            continue
        col = by_task[task].sort_values(ascending=False)
        frame = pd.DataFrame({"variant": col.index, "accuracy": col.to_numpy()})
        parts.append(f"<details><summary>{esc(task)} — {esc(info['split'])}, {esc(info['n_examples'])} examples, chance "
                     f"{fmt(info['chance'])}, best {fmt(col.iloc[0])}</summary>"
                     + (f"<p class='note'>instruction: {esc(info['instruction'])}</p>" if info.get("instruction") else "")
                     + frame_html(frame, left=("variant",)) + "</details>")
    # --- config
    parts.append("<h2>Run configuration</h2>")
    parts.append(f"<details><summary>config.json</summary><pre>{esc(json.dumps(cfg, indent=2, default=str))}</pre></details>")
    body = "\n".join(parts)
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{CSS}</style></head>"
            f"<body>{body}<script>{CHECK_SCRIPT}</script></body></html>")


def generalization_html(a) -> str:
    """Whether the chosen prompt generalized, what to do next, and every selection rule and ensemble judged
    out of sample on the selection tasks (nested leave-one-task-out) beside its held-out score and cost."""
    s = a.summary
    if not s.get("verdict"):
        return ""
    out = (f"<h2>Did the chosen prompt generalize?</h2><p><b>{esc(s['verdict'])}</b></p>"
           f"<p>Next step: {esc(s['next_step'])}</p>")
    if not a.rules.empty:
        out += ("<p class='note'>Selection rules and prompt ensembles: loto_mean_norm is each rule's score on selection "
                "tasks it did not see when choosing (nested leave-one-task-out), t_vs_default its paired t statistic against "
                "the default rule (the 5-prompt ensemble), which only a rule with t >= 3 replaces; cost is model calls "
                "per example. Held-out scores are never used to choose.</p>" + rules_html(a.rules))
    t = s.get("transductive")
    if t and len(getattr(a, "transductive", [])):
        out += (f"<h3>Transductive: each held-out task's prompt from its inputs alone</h3><p class='note'>Chosen by "
                f"{esc(t['weighting'])}, its targets unread for the choice (read only for the score beside it): "
                f"{esc(t['reason'])}.</p>" + rules_html(a.transductive, choices=("transductive", "chosen_on_selection"),
                                                         left=("task", "weighting")))
    return out


RULE_HEADS = {"loto_mean_norm": "LOTO mean_norm", "selection_mean_norm": "selection mean_norm",
              "held_out_mean_norm": "held-out mean_norm", "t_vs_default": "t vs default",
              "criterion_value": "criterion value", "chosen_on_selection": "chosen on selection tasks",
              "chosen_on_selection_mean_norm": "its held-out mean_norm",
              "best_in_hindsight_mean_norm": "best in hindsight"}


def rules_html(rules: pd.DataFrame, choices: tuple[str, ...] = ("choice",), left: tuple[str, ...] = ("rule",)) -> str:
    """The rules table, narrow enough for a 1280-pixel window: an ensemble's members one per line (a variant id
    may break anywhere), and headers that can wrap. `choices`: the columns that name a prompt or an ensemble."""
    head = "".join(f"<th class='{'l' if c in left + choices else ''}'>{esc(RULE_HEADS.get(c, c))}</th>"
                   for c in rules.columns)
    body = []
    for _, r in rules.iterrows():
        cells = []
        for c, v in r.items():
            if c in choices and "(" in str(v) and str(v).endswith(")"):
                method, members = str(v)[:-1].split("(", 1)
                v = f"{esc(method)} of {len(members.split('+'))}:<br>" + "<br>".join(esc(m) for m in members.split("+"))
                cells.append(f"<td class='l choice'>{v}</td>")
            else:
                cells.append(f"<td class='{'l choice' if c in choices else 'l' if c in left else ''}'>{fmt(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table class='rules'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def write_report(results, out: str | Path, analysis=None, full=None) -> Path:
    """Write `report.html` into the run directory `out` (or to `out` if it names an .html file)."""
    out = Path(out)
    path = out if out.suffix == ".html" else out / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    title = f"promptkit report: {path.parent.name}"
    html = report_html(results, analysis, title, full)
    write_atomic(path, lambda tmp: tmp.write_text(html, encoding="utf-8"))
    return path
