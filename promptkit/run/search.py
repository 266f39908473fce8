"""Budgeted search over prompt variants: spend forward tokens where the ranking is still uncertain.

Strategies (all seeded, all charged through one `Ledger` that never lets spending pass the budget):
- `exhaustive`: every variant on every cell (the reference);
- `halving`: successive halving — all variants on a small slice of cells, keep the better half,
  grow the slice, repeat;
- `racing`: F-race (irace) — add blocks of cells, one per task; a Friedman test with its rank-sum
  post-hoc drops variants shown worse than the best;
- `thompson`: Thompson sampling on Beta posteriors of correctness (as in FormatSpread), drawing
  both the best and the worst variant.

A *cell* is one (task, example) of the selection tasks. Cells are visited round-robin over tasks,
in a seeded order, so any prefix covers every task about equally. A variant's value on a cell is
its chance-normalized correctness, (correct - chance) / (1 - chance), whose mean is the
`mean_norm` aggregate."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import stats as sps

STRATEGIES = ("exhaustive", "halving", "racing", "thompson")

# evaluate (variant index, cell index) pairs -> correctness in [0, 1] for each
Oracle = Callable[[list[tuple[int, int]]], list[float]]


def cell_order(tasks: list[str], n_examples: list[int], seed: int) -> list[tuple[int, int]]:
    """(task index, example index) cells, round-robin over tasks, examples shuffled per task by `seed`."""
    rng = np.random.default_rng(seed)
    orders = [list(rng.permutation(n)) for n in n_examples]
    cells = []
    for depth in range(max(n_examples, default=0)):
        for t, order in enumerate(orders):
            if depth < len(order):
                cells.append((t, int(order[depth])))
    return cells


def parse_budget(value: str | float, exhaustive_tokens: int) -> int:
    """A budget as tokens: a fraction of the exhaustive count ('0.25', '25%') or an absolute count ('2e6')."""
    text = str(value).strip()
    try:
        number = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(f"budget {value!r} is neither a fraction of exhaustive compute (0.25, 25%) "
                         "nor a number of forward tokens (2e6)") from None
    if not number > 0 or math.isinf(number):
        raise ValueError(f"budget {value!r} must be a positive fraction or token count")
    return int(number * exhaustive_tokens) if number <= 1 else int(number)


class Ledger:
    """What has been evaluated and what it cost. `evaluate` runs pairs in order while they fit in the
    budget and refuses the rest, so no strategy can overspend."""

    def __init__(self, cost: np.ndarray, chance: np.ndarray, oracle: Oracle, budget: int):
        self.cost = np.asarray(cost, dtype=np.int64)  # variants × cells, forward tokens
        self.chance = np.asarray(chance, dtype=float)  # per cell
        self.oracle = oracle
        self.budget = int(budget)
        self.used = 0
        self.correct = np.full(self.cost.shape, np.nan)
        self.exhausted = False
        self.calls = 0

    @property
    def n_variants(self) -> int:
        return self.cost.shape[0]

    @property
    def n_cells(self) -> int:
        return self.cost.shape[1]

    def affordable(self, pairs: list[tuple[int, int]]) -> bool:
        todo = [(v, c) for v, c in pairs if np.isnan(self.correct[v, c])]
        return self.used + sum(int(self.cost[v, c]) for v, c in todo) <= self.budget

    def evaluate(self, pairs: list[tuple[int, int]]) -> int:
        """Evaluate the pairs not yet seen, in order, until the next would pass the budget; returns how many ran."""
        todo, taken, spend = [], set(), self.used
        for v, c in pairs:
            if not np.isnan(self.correct[v, c]) or (v, c) in taken:
                continue
            if spend + self.cost[v, c] > self.budget:
                self.exhausted = True
                break
            todo.append((v, c))
            taken.add((v, c))
            spend += int(self.cost[v, c])
        if todo:
            values = self.oracle(todo)
            self.calls += 1
            for (v, c), x in zip(todo, values):
                self.correct[v, c] = float(x)
            self.used = spend
        return len(todo)

    def value(self) -> np.ndarray:
        """Chance-normalized correctness, NaN where not evaluated."""
        return (self.correct - self.chance) / np.maximum(1 - self.chance, 1e-9)

    def means(self) -> np.ndarray:
        v = self.value()
        seen = ~np.isnan(v)
        with np.errstate(invalid="ignore"):
            return np.where(seen.any(1), np.nansum(v, 1) / np.maximum(seen.sum(1), 1), -np.inf)


@dataclass
class SearchResult:
    strategy: str
    seed: int
    budget: int
    used: int
    chosen: int  # variant index
    worst: int | None
    means: list[float]  # chance-normalized mean over each variant's evaluated cells
    n_cells: list[int]  # cells each variant was evaluated on
    alive: list[int]  # variants still in the running at the end
    history: list[dict] = field(default_factory=list)

    def ranking(self) -> list[int]:
        """Variants ordered by the search's estimate: still-alive first, then by mean and evaluations."""
        alive = set(self.alive)
        return sorted(range(len(self.means)), key=lambda v: (v not in alive, -self.means[v], -self.n_cells[v], v))


def run(strategy: str, cost: np.ndarray, chance: np.ndarray, oracle: Oracle, budget: int, seed: int = 0,
        blocks: int = 1, **options) -> SearchResult:
    """Run one strategy. `cost` is variants × cells (cells already in visiting order); `blocks` is how
    many consecutive cells make one block (the number of tasks, so a block covers each task once)."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown search strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    ledger = Ledger(cost, chance, oracle, budget)
    fn = {"exhaustive": _exhaustive, "halving": _halving, "racing": _racing, "thompson": _thompson}[strategy]
    alive, history, worst, chosen = fn(ledger, seed=seed, block=max(1, int(blocks)), **options)
    means = ledger.means()
    if chosen is None:
        pool = alive or list(range(ledger.n_variants))
        chosen = max(pool, key=lambda v: (means[v], (~np.isnan(ledger.correct[v])).sum(), -v))
    return SearchResult(strategy, seed, ledger.budget, ledger.used, int(chosen), worst,
                        [float(m) for m in means], [int(n) for n in (~np.isnan(ledger.correct)).sum(1)],
                        sorted(int(v) for v in alive), history)


def _cell_major(variants: list[int], cells: range) -> list[tuple[int, int]]:
    return [(v, c) for c in cells for v in variants]


def _exhaustive(ledger: Ledger, seed: int, block: int):
    everyone = list(range(ledger.n_variants))
    ledger.evaluate(_cell_major(everyone, range(ledger.n_cells)))
    return everyone, [{"cells": ledger.n_cells, "alive": len(everyone), "used": ledger.used}], None, None


def _halving(ledger: Ledger, seed: int, block: int):
    """Successive halving (Karnin et al. 2013): the budget is split evenly over ceil(log2 n) rounds;
    each round gives the survivors as many new cells (whole blocks) as its share buys."""
    alive = list(range(ledger.n_variants))
    rounds = max(1, math.ceil(math.log2(max(2, len(alive)))))
    depth, history = 0, []
    for r in range(rounds):
        share = (ledger.budget - ledger.used) / (rounds - r)
        new = np.cumsum(ledger.cost[alive, depth:].sum(0))
        affordable = int(np.searchsorted(new, share, side="right"))  # new cells the share pays for
        if affordable >= block:
            affordable -= affordable % block  # whole blocks, so every task gets the same number of new cells
        reach = min(ledger.n_cells, depth + max(1, affordable))
        ledger.evaluate(_cell_major(alive, range(depth, reach)))
        depth = reach
        means = ledger.means()
        history.append({"round": r, "cells": depth, "alive": len(alive), "used": ledger.used})
        if ledger.exhausted or len(alive) == 1:
            break
        keep = math.ceil(len(alive) / 2)
        alive = sorted(alive, key=lambda v: (-means[v], v))[:keep]
    return alive, history, None, None


def _racing(ledger: Ledger, seed: int, block: int, alpha: float = 0.05, first_test: int = 3):
    """F-race: evaluate the survivors block by block; at looks spaced geometrically from `first_test`
    blocks, a Friedman test over blocks and its rank-sum post-hoc remove variants worse than the best.
    Each look tests at alpha / (number of possible looks), so the chance of ever removing the true
    best stays within alpha."""
    alive = list(range(ledger.n_variants))
    n_blocks = ledger.n_cells // block
    looks = _look_schedule(first_test, n_blocks)
    level = alpha / max(1, len(looks))
    history = []
    for b in range(n_blocks):
        cells = range(b * block, (b + 1) * block)
        pairs = _cell_major(alive, cells)
        if not ledger.affordable(pairs):
            break
        ledger.evaluate(pairs)
        if b + 1 in looks and len(alive) > 1:
            values = ledger.value()[alive][:, : (b + 1) * block]
            per_block = values.reshape(len(alive), b + 1, block).mean(2).T  # blocks × alive
            out = friedman_posthoc(per_block, level)
            history.append({"block": b + 1, "alive": len(alive), "removed": len(out), "used": ledger.used})
            alive = [v for i, v in enumerate(alive) if i not in out]
    return alive, history, None, None


def _look_schedule(first: int, n_blocks: int, growth: float = 1.5) -> set[int]:
    looks, k = set(), float(first)
    while round(k) <= n_blocks:
        looks.add(int(round(k)))
        k = max(k * growth, k + 1)
    return looks


def friedman_posthoc(table: np.ndarray, alpha: float) -> set[int]:
    """Columns (variants) of a blocks × variants table that the Friedman test and Conover's rank-sum
    post-hoc (as in F-race, Birattari et al. 2002) show worse than the best column, at level alpha."""
    b, k = table.shape
    if b < 2 or k < 2:
        return set()
    ranks = np.vstack([sps.rankdata(row) for row in table])  # higher value, higher rank
    sums = ranks.sum(0)
    a = (ranks ** 2).sum()
    c = b * k * (k + 1) ** 2 / 4
    if a - c <= 1e-12:  # every block a tie
        return set()
    t = (k - 1) * ((sums - b * (k + 1) / 2) ** 2).sum() / (a - c)
    if sps.chi2.sf(t, k - 1) >= alpha:
        return set()
    dof = (b - 1) * (k - 1)
    spread = math.sqrt(max(0.0, 2 * b * (1 - t / (b * (k - 1))) * (a - c) / dof))
    threshold = sps.t.ppf(1 - alpha / 2, dof) * spread
    best = sums.max()
    return {j for j in range(k) if best - sums[j] > threshold}


def _thompson(ledger: Ledger, seed: int, block: int, batch: int = 64, worst_share: float = 0.5):
    """Thompson sampling over Beta(1 + correct, 1 + wrong) posteriors: each draw samples every variant's
    accuracy and evaluates the argmax (or, for a `worst_share` of draws, the argmin) on its next cell;
    `batch` draws go to the engine together (posteriors update between batches)."""
    rng = np.random.default_rng(seed)
    n = ledger.n_variants
    nxt = np.zeros(n, dtype=int)
    history, stop = [], False
    while not stop:
        wins = np.nansum(ledger.correct, 1)
        seen = (~np.isnan(ledger.correct)).sum(1)
        open_ = nxt < ledger.n_cells
        if not open_.any():
            break
        pairs, planned = [], nxt.copy()
        for d in range(batch):
            draw = rng.beta(1 + wins, 1 + seen - wins)
            draw[planned >= ledger.n_cells] = np.nan
            if np.isnan(draw).all():
                break
            low = rng.random() < worst_share
            v = int(np.nanargmin(draw) if low else np.nanargmax(draw))
            pairs.append((v, int(planned[v])))
            planned[v] += 1
        done = ledger.evaluate(pairs)
        for v, c in pairs[:done]:
            nxt[v] = max(nxt[v], c + 1)
        stop = ledger.exhausted or done == 0
    wins = np.nansum(ledger.correct, 1)
    seen = (~np.isnan(ledger.correct)).sum(1)
    posterior = (1 + wins) / (2 + seen)
    history.append({"draws": int(seen.sum()), "used": ledger.used})
    # posterior means shrink a variant that looked good on one or two cells toward 1/2
    worst = int(np.argmin(np.where(seen > 0, posterior, np.inf)))
    best = int(np.argmax(np.where(seen > 0, posterior, -np.inf)))
    return list(range(n)), history, worst, best


# ---------------------------------------------------------------------------- a search inside a run


def run_search(work: list, plan, backend, options, score_some: Callable[[list], list]) -> tuple[list, list, dict]:
    """Run `options.search` over the selection tasks, then score the chosen variant on the held-out tasks.
    Returns the work items that were scored, their scores, and what the search did (for config.json).

    Every request is charged its uncached forward tokens (prompt once, plus each continuation), so a warm
    result cache does not make a strategy look cheaper than it is."""
    from tqdm.auto import tqdm

    from ..analysis.metrics import choose
    from ..errors import PromptkitError

    variants, seed = plan.variants, options.seed
    index = {(w.variant.id, w.task.name, w.example.id): i for i, w in enumerate(work)}
    tokens = request_tokens([w.request for w in work], backend)
    exhaustive = sum(tokens)
    try:
        total = parse_budget(1.0 if options.budget is None else options.budget, exhaustive)
    except ValueError as exc:
        raise PromptkitError(f"--budget: {exc}") from None
    selection = [t for t in plan.tasks if t.split == "selection"]
    held = [t for t in plan.tasks if t.split != "selection"]
    # the chosen variant's held-out scores are paid for out of the budget, set aside first
    reserve = max((sum(tokens[index[(v.id, t.name, e.id)]] for t in held for e in t.examples) for v in variants), default=0)
    if total - reserve <= 0 or not selection:
        raise PromptkitError(f"budget of {total:,} forward tokens leaves nothing for the search ({reserve:,} are set aside "
                             f"to score the chosen variant on the held-out tasks; exhaustive is {exhaustive:,}); "
                             "raise --budget" if selection else "the suite has no selection tasks to search on")
    cells = cell_order([t.name for t in selection], [len(t.examples) for t in selection], seed)
    item = lambda v, c: index[(variants[v].id, selection[cells[c][0]].name, selection[cells[c][0]].examples[cells[c][1]].id)]
    cost = np.array([[tokens[item(v, c)] for c in range(len(cells))] for v in range(len(variants))], dtype=np.int64)
    chance = np.array([selection[t].chance for t, _ in cells], dtype=float)
    scored: dict[int, list] = {}

    def score(idx: list[int]) -> list:
        got = score_some([work[i].request for i in idx])
        scored.update(zip(idx, got))
        return got

    with tqdm(total=total - reserve, unit="tok", desc=f"search ({options.search})", disable=not options.progress,
              dynamic_ncols=True) as bar:
        def oracle(pairs):
            idx = [item(v, c) for v, c in pairs]
            got = score(idx)
            bar.update(sum(tokens[i] for i in idx))
            return [float(choose(s) in work[i].example.correct_indices()) for i, s in zip(idx, got)]

        result = run(options.search, cost, chance, oracle, total - reserve, seed=seed, blocks=len(selection))
    chosen = variants[result.chosen]
    held_idx = [index[(chosen.id, t.name, e.id)] for t in held for e in t.examples]
    if held_idx:
        score(held_idx)
    kept = sorted(scored)
    info = {
        "strategy": options.search, "seed": seed, "budget_tokens": total, "exhaustive_tokens": exhaustive,
        "used_tokens": result.used + sum(tokens[i] for i in held_idx), "search_tokens": result.used,
        "held_out_tokens": sum(tokens[i] for i in held_idx),
        "chosen": chosen.id, "worst": None if result.worst is None else variants[result.worst].id,
        "alive": [variants[v].id for v in result.alive],
        "cells": {variants[v].id: n for v, n in enumerate(result.n_cells)},
        "estimates": {variants[v].id: m for v, m in enumerate(result.means) if result.n_cells[v]},
        "ranking": [variants[v].id for v in result.ranking() if result.n_cells[v]],
        "history": result.history,
    }
    return [work[i] for i in kept], [scored[i] for i in kept], info


def request_tokens(requests: list, backend) -> list[int]:
    """Forward tokens each request costs without a cache: its prompt once, plus every continuation."""
    from ..engine.plan import token_counts

    prompts = list(dict.fromkeys(r.prompt for r in requests))
    per_prompt = dict(zip(prompts, token_counts(backend, prompts)))
    conts = list(dict.fromkeys(c for r in requests for c in r.continuations))
    per_cont = dict(zip(conts, token_counts(backend, conts)))
    return [per_prompt[r.prompt] + 1 + sum(per_cont[c] for c in r.continuations) for r in requests]
