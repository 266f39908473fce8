"""A run's options in one object, with every rule about how they combine and its error message; checked
before anything loads (and, for the rules that need the plan, before the model loads)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from ..analysis.analyze import AnalysisOptions
from ..engine.cache import check_cache_path, default_cache_path
from ..errors import PromptkitError
from ..prompts.noise import parse as parse_noise
from ..results.timings import Stopwatch
from .search import STRATEGIES

MC_SCORING = ("loglikelihood", "generation")
PROMPT_LIKELIHOOD = 0  # examples per task whose prompts are also scored, for prompt perplexity: off by default, as a
# prompt's own likelihood projects every prompt token onto the vocabulary (262k entries for Gemma 3): with every
# evaluated prompt scored, the default suite's scoring took 2.5 times as long (benchmarks/README)


@dataclass
class RunOptions:
    """How `evaluate` runs.

    limit: examples per task (default: the suite's `limit`); max_variants: a seeded sample of at most N
        variants, spread over families (None: all); seed: variant and example sampling; variants: keep only
        these variant ids (after expansion; an id the templates do not produce is an error).
    threads: CPU threads for scoring ("auto": the cores this process may use, fewer when the load average shows
        other work on them, said in one line).
    dtype, device, batch_tokens, trust_remote_code, device_map: how the model loads (backends that do not
        load a model locally ignore them). trust_remote_code lets a hub model run the Python code in its
        repository; device_map spreads one model over this machine's GPUs (transformers' device_map).
    cache: True (the shared result cache in the user cache directory), a SQLite path, or False/None for none.
        Scores are keyed by the model's fingerprint, so a cache never serves one model's scores for another.
    calibrate: also score each variant on a content-free input ("N/A") with each task's choice sets, for
        the `calibrated` scoring mode (Zhao et al. 2021).
    prompt_likelihood: for the first N examples of every multiple-choice task, also score each variant's rendered
        prompt itself (one more call per variant and example), so that the label-free choice can read prompt
        perplexity (Gonen et al. 2022); 0 (the default) for none. A search scores none.
    search: "halving", "racing", "thompson" (or "exhaustive"): spend `budget` (a fraction of the exhaustive
        forward tokens, 0.25 or "25%", or a token count "2e6") where the ranking is uncertain; only the
        selection tasks steer it, and the chosen variant is then scored on the held-out tasks.
    noise: noise specs ("typos:0.05", "word_drop:0.1", "casing:0.1", "whitespace:0.1", "choices",
        "prompt.typos:0.05", ...): every sampled variant also runs under each, on the same examples.
    base_url, api_key_env, concurrency, requests_per_minute, request_timeout, model_revision: how a model behind a
        server is reached (`openai:NAME`): its base URL (default $PROMPTKIT_BASE_URL or $OPENAI_BASE_URL), the NAME of
        the environment variable holding the key (the key itself is never recorded), requests in flight at once, an
        optional rate limit, seconds per request, and a revision the user pins (the same name can serve new weights).
    mc_scoring: how multiple-choice examples are scored: "loglikelihood" (each choice's log-likelihood, default) or
        "generation" (the options shown, a short answer generated at temperature 0 and mapped back to a choice; for
        chat-only endpoints, and to compare both modes on one model). See prompts/choice_generation.py.
    synthetic: options of the synthetic demonstrations that variants with `demo_source: synthetic` show
        (promptkit.run.synthetic.SyntheticConfig fields); synthetic_model: the model that writes them.
    out: the run directory to write (None: none); report: also write report.html there;
    analysis: how the run directory's statistics are computed (AnalysisOptions or a dict of its fields).
    progress: progress bars; log: where notes and warnings go.
    timings: the Stopwatch that times the run's stages (config.json's `timings`); default a new one, started when
        the options are checked (`promptkit run` passes one that has also counted the process's start-up).
    """

    limit: int | None = None
    max_variants: int | None = None
    seed: int = 0
    variants: list[str] | None = None
    threads: int | str = "auto"
    dtype: str = "auto"
    device: str = "auto"
    batch_tokens: int | str = "auto"
    cache: str | Path | bool | None = True
    calibrate: bool = False
    prompt_likelihood: int = PROMPT_LIKELIHOOD
    trust_remote_code: bool = False
    device_map: str | dict | None = None
    search: str | None = None
    budget: str | float | None = None
    noise: list[str] = field(default_factory=list)
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 4
    requests_per_minute: float | None = None
    request_timeout: float = 60.0
    model_revision: str | None = None
    mc_scoring: str = "loglikelihood"
    synthetic: Any = None
    synthetic_model: Any = None
    out: str | Path | None = None
    report: bool = True
    analysis: AnalysisOptions | dict | None = None
    progress: bool = True
    log: Callable[[str], None] = print
    timings: Stopwatch | None = field(default_factory=Stopwatch)

    def validated(self) -> "RunOptions":
        """A checked copy: unknown strategies, budgets without a search, combinations not supported yet and
        malformed noise specs are refused here, with what to do instead."""
        search = self.search
        if search is not None and search not in STRATEGIES:
            raise PromptkitError(f"unknown search strategy '{search}'; choose one of {', '.join(STRATEGIES)}")
        if self.budget is not None and search is None:
            raise PromptkitError("a budget needs a search strategy: pass --search halving|racing|thompson (search=...)")
        if search == "exhaustive" and self.budget is None:
            search = None  # every variant on every example: the plain run
        if self.noise and (search is not None or self.calibrate):
            raise PromptkitError("--noise cannot be combined with --search or --calibrate yet: run the noise conditions "
                                 "on the variants you want to compare")
        self.check_numbers()
        self.check_server_options()
        if self.mc_scoring == "generation" and (search is not None or self.calibrate):
            raise PromptkitError("--mc-scoring generation cannot be combined with --search or --calibrate (both work on "
                                 "log-likelihoods); score by log-likelihood, or drop them")
        if search is not None and self.calibrate:
            raise PromptkitError("--calibrate cannot be combined with --search yet: run the search, then a calibrated run "
                                 "of the variants it kept")
        try:
            specs = list(dict.fromkeys(p.spec for p in map(parse_noise, self.noise or []) if p is not None))
        except ValueError as exc:
            raise PromptkitError(f"--noise: {exc}") from None
        analysis = self.analysis if isinstance(self.analysis, AnalysisOptions) else AnalysisOptions.from_dict(self.analysis)
        return replace(self, search=search, noise=specs, analysis=analysis, timings=self.timings or Stopwatch())

    def check_numbers(self) -> None:
        """limit, max_variants and seed: whole numbers in range; the result cache: a file that can be written."""
        for name, least in (("limit", 1), ("max_variants", 1), ("seed", 0), ("prompt_likelihood", 0)):
            value = getattr(self, name)
            if value is None and name != "seed":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise PromptkitError(f"--{name.replace('_', '-')} ({name}=) must be a whole number >= {least}, not {value!r}")
        if self.threads != "auto" and (isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 1):
            raise PromptkitError(f"--threads (threads=) must be 'auto' or a whole number >= 1, not {self.threads!r}")
        if self.cache not in (None, False):
            check_cache_path(default_cache_path() if self.cache is True else Path(self.cache))

    def check_server_options(self) -> None:
        """The scoring mode and the numbers of the server options, each refused with the field named."""
        if self.mc_scoring not in MC_SCORING:
            raise PromptkitError(f"--mc-scoring (mc_scoring=) must be one of {', '.join(MC_SCORING)}, not {self.mc_scoring!r}")
        if isinstance(self.concurrency, bool) or not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise PromptkitError(f"--concurrency (concurrency=) must be a whole number >= 1, not {self.concurrency!r}")
        for name in ("request_timeout", "requests_per_minute"):
            value = getattr(self, name)
            if value is None and name == "requests_per_minute":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise PromptkitError(f"--{name.replace('_', '-')} ({name}=) must be a finite number > 0, not {value!r}")
        if self.base_url is not None:
            check_base_url(self.base_url)

    def check_plan(self, generative_tasks: list[str], synthetic_variants: bool) -> None:
        """The rules that need the loaded suite and the expanded variants (checked before the model loads)."""
        if self.search is not None and generative_tasks:
            raise PromptkitError(f"--search works on multiple-choice tasks only for now; tasks {', '.join(generative_tasks)} "
                                 "are generative. Run without --search, or search a suite of multiple-choice tasks")
        if self.calibrate and synthetic_variants:
            raise PromptkitError("--calibrate cannot be combined with synthetic demonstrations yet (the content-free prompts "
                                 "would not show them); calibrate a run of the other demonstration sources")

    def check_models(self, count: int) -> None:
        """The rules for runs with several models."""
        if count > 1 and self.search is not None:
            raise PromptkitError("--search runs on one model: each model's search would score different examples, and "
                                 "the models could not be compared pairwise; search on one model, then run the finalists "
                                 "on all of them")
        if count > 1 and self.noise:
            raise PromptkitError("--noise cannot be combined with several models yet: run the noise conditions per model")

    def for_rank(self, ranks) -> "RunOptions":
        """Under `accelerate launch`: each process on its own device, rank 0 alone shows progress, logs and
        writes the run directory."""
        if not ranks.active:
            return self
        device = (ranks.device or self.device) if self.device in ("auto", "cuda") else self.device
        if ranks.is_main:
            return replace(self, device=device)
        return replace(self, device=device, progress=False, log=lambda msg: None, out=None)

    def load_options(self) -> dict:
        """What a backend is loaded with."""
        return {"dtype": self.dtype, "device": self.device, "batch_tokens": self.batch_tokens,
                "trust_remote_code": self.trust_remote_code, "device_map": self.device_map,
                "progress": self.progress, "log": self.log, "base_url": self.base_url, "api_key_env": self.api_key_env,
                "concurrency": self.concurrency, "requests_per_minute": self.requests_per_minute,
                "request_timeout": self.request_timeout, "model_revision": self.model_revision}


def check_base_url(url) -> None:
    """An http(s) URL with a host, refused with the option named (a malformed one was a traceback)."""
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
        host = parts.hostname if parts else None
        parts and parts.port  # a port that is not a number raises here
    except ValueError as exc:
        raise PromptkitError(f"--base-url (base_url=) {url!r} is not a valid URL ({exc}); give one like "
                             "http://127.0.0.1:8000/v1") from None
    if not parts or parts.scheme not in ("http", "https") or not host:
        raise PromptkitError(f"--base-url (base_url=) {url!r} is not an http(s) URL with a host; give one like "
                             "http://127.0.0.1:8000/v1")


def options_from(values: dict) -> RunOptions:
    """RunOptions from keyword arguments, naming any that is not an option."""
    known = {f.name for f in dataclasses.fields(RunOptions)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise PromptkitError(f"unknown option(s) {', '.join(unknown)}; options are {', '.join(sorted(known))}")
    return RunOptions(**values)
