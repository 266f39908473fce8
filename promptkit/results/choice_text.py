"""Plain-text views of choosing a prompt: every selection rule beside the others and the one recommended
(`promptkit rank --recommend`), and the prompt adapted to a new task (`promptkit recommend --task`)."""

from __future__ import annotations

from ..analysis.names import num


def format_rules(rules, rec) -> str:
    """`promptkit rank --recommend`: every selection rule and ensemble judged out of sample, and the pick."""
    import pandas as pd

    from ..analysis.advice import why
    from ..analysis.selection import RULE_COST

    lines = ["selection rules and prompt ensembles (loto_mean_norm: score on selection tasks left out of the choice, "
             "nested leave-one-task-out; t_vs_default: paired t against the default rule, which only t >= 3 replaces; "
             "cost: model calls per example; held-out scores are never used to choose):"]
    with pd.option_context("display.width", 250, "display.max_colwidth", 70):
        lines.append(rules.to_string(index=False, float_format=num))
    c = rec.candidate
    what = c.name if c.method == "single" else f"{c.method} ensemble of {len(c.members)}: {', '.join(c.members)}"
    lines.append(f"recommended rule: {rec.rule} → {what if rec.rule != 'task_aware' else 'chosen per task by its features'}"
                 f" ({c.cost}× calls per example)")
    short = [f"{r} holds {k}" for r, k in zip(rules["rule"], rules["cost"]) if k < RULE_COST.get(r, k)]
    if short:
        lines.append(f"  (ensembles named by the prompts they ask for; this run has fewer variants: {', '.join(short)})")
    lines.append(f"  why: {why(rec)}")
    return "\n".join(lines)


def format_adaptation(a) -> str:
    """`promptkit recommend --task`: the choice for one new task, its expected score and what it cost."""
    import pandas as pd

    lo, hi = a.interval_accuracy
    cost = (f"{a.calls.get('prompts', 0)} prompts scored ({a.calls.get('continuations', 0)} continuations, "
            f"{a.calls.get('from_cache', 0)} from the cache, {a.calls.get('forward_tokens', 0):,} forward tokens)")
    lines = [f"task {a.task}: {a.n_labelled} labelled example(s); prior from the run's selection tasks",
             f"weight on the task's own evidence in the choice {num(a.shrink, 2)}: {a.weight_reason}",
             f"recommended prompt: {a.variant}" + ("" if a.variant == a.cross_task_variant else
                                                   f" (the cross-task choice would be {a.cross_task_variant})"),
             f"expected accuracy on the task's other examples {num(a.expected_accuracy)} [{num(lo)}, {num(hi)}] "
             f"(mean_norm {num(a.expected_norm)}; chance {num(a.chance)}; 95% interval): from this prompt's own "
             f"{a.n_labelled} labelled answer(s) and its cross-task prior, so the same whichever candidates were scored",
             f"cost: {cost}", "", "candidates, by choice_score = (1 − weight) × prior_mean_norm + weight × the labelled score "
             "(chance-normalized); posterior_mean_norm and sd: each prompt's expected score from its own labels and prior:"]
    with pd.option_context("display.width", 250, "display.max_rows", 40):
        lines.append(a.table.head(20).to_string(index=False, float_format=num))
    return "\n".join(lines)


def format_unlabelled(u) -> str:
    """`promptkit recommend --task --unlabelled`: the label-free choice for one new task, why, and what it cost."""
    import pandas as pd

    c = u.candidate
    what = c.name if c.method == "single" else f"the {len(c.members)}-prompt ensemble (averaged probabilities) {c.name}"
    cost = (f"{u.calls.get('prompts', 0)} prompts scored ({u.calls.get('continuations', 0)} continuations, "
            f"{u.calls.get('from_cache', 0)} from the cache, {u.calls.get('forward_tokens', 0):,} forward tokens)")
    lines = [f"task {u.task}: {u.n_unlabelled} unlabelled input(s), targets unread; prior from the run's selection tasks",
             f"criterion: {u.weighting} — {u.reason}",
             f"recommended prompt: {what}" + ("" if c.members[0] == u.cross_task_variant else
                                             f" (the cross-task choice would be {u.cross_task_variant})"),
             f"cost: {cost}" + (", each input's prompt scored for its choices and for its own likelihood"
                                if "perplexity" in u.criteria else "") + f" ({c.cost}× calls per example from now on)",
             *([] if "perplexity" in u.criteria else
               ["prompt perplexity: not weighed, as the run's selection tasks have no prompt likelihoods (a run made "
                "with `--prompt-likelihood N` has them for each task's first N examples)"]),
             "", "candidates, by choice_score = z(prior_mean_norm) + weight × z(criterion) (mi: mutual information of "
             "input and answer; agreement: share of answers equal to the candidates' mean vote; calibrated: mean top "
             "probability after batch calibration; perplexity: the prompt's mean log-likelihood per token, higher for a "
             "prompt the model finds likelier):"]
    with pd.option_context("display.width", 250, "display.max_rows", 40):
        lines.append(u.table.head(20).to_string(index=False, float_format=num))
        lines.append("\nweightings on the selection tasks left out in turn (mean_norm of what each picks):")
        lines.append(u.loto.drop(columns=["criterion", "weight"]).head(8).to_string(index=False, float_format=num))
    return "\n".join(lines)


def format_transductive(frame, weighting: str | None) -> str:
    """The label-free choice per held-out task from its inputs alone, beside the choice made on the selection tasks."""
    import pandas as pd

    if frame is None or len(frame) == 0:
        return ""
    head = (f"transductive (per held-out task, chosen from its inputs alone, targets unread; {weighting}, learned on "
            "the selection tasks; mean_norm held out):")
    with pd.option_context("display.width", 250, "display.max_colwidth", 40):
        return head + "\n" + frame.to_string(index=False, float_format=num)
