"""The documentation works: `mkdocs build --strict` passes (no broken link, anchor or API reference), and every shell
and Python block in README.md and docs/ runs.

How a page's blocks run: one driver process per page, in a fresh working folder, with a private HOME and
PROMPTKIT_CACHE shared by the pages. The generated tasks the pages use are made first, then the pages run two at
a time; within a page, blocks run in page order: a bash block as
`bash -euo pipefail -c`, a Python block inside the driver (the page's Python blocks share one namespace, as in a
notebook), and a block after `<!-- file: PATH -->` is written to PATH for the blocks after it. A block after
`<!-- illustrative: REASON -->` is not run; the reason is required.

Substitutions, so the pages run in seconds on a tiny random model and a four-task suite instead of minutes on
Gemma 3 270M and 25 tasks (the text of the pages is what a user types; only these change, here and nowhere else):
- shell: the install prefix of the README's main command is dropped (the environment under test is installed);
  every `promptkit run` gets `--model TINY` (or its `--model` names mapped to tiny models) and `--suite SMALL`
  (or `offline_mc`/`offline_gen` mapped to small suites of generated tasks), and `--limit 3 --max-variants 4
  --synthetic-n 2 --bootstrap 200 --no-report --quiet` appended, so the page's own values are overridden (a run
  of a named template set with `--max-variants 0` keeps all its variants: the demos set compares every prompt
  under three demonstration sources);
  `promptkit rank` and `promptkit report` get `--bootstrap 200`;
- Python: `promptkit.evaluate` and `promptkit.load_backend` are wrapped the same way (model and suite names
  mapped; limit at most 3, at most 4 variants, no progress bars).
The pages share one result cache, so a request two pages make is scored once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
RUN_LANGS = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python", "py": "python"}
TEST_COMMAND = "bash scripts/test.sh"  # shown plainly in README (CI runs it); never run from inside the tests
MARKER = re.compile(r"^\s*<!--\s*(illustrative|file):\s*(.*?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")
INSTALL_PREFIX = "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 && pip install -e . && "
MODEL_NAMES = {"gemma-3-270m": "$PK_MODEL", "smollm2-135m-instruct": "$PK_CHAT_MODEL"}
SUITE_NAMES = {"offline_mc": "$PK_SUITE", "offline_gen": "$PK_GEN_SUITE"}
RUN_EXTRA = " --limit 3 --max-variants 4 --synthetic-n 2 --bootstrap 200 --no-report --quiet"
STATS_EXTRA = " --bootstrap 200"
SMALL_SUITE = """name: docs_small
limit: 3
selection: [generated:capital_of_country, generated:even_or_odd, generated:plural_of_noun, generated:syllogism]
held_out: [generated:larger_number, generated:rhymes_with]
"""
SMALL_GEN_SUITE = """name: docs_small_gen
limit: 3
selection: [generated:capital_city, generated:addition]
held_out: [generated:first_letter]
"""
PAGE_TIMEOUT = 300  # seconds for one page's blocks (all pages together take about 3 minutes on 2 idle cores)


# ---------------------------------------------------------------------------------------------- parsing the pages


def blocks(path: Path) -> list[dict]:
    """Every fenced block of a page: language, code (indentation removed), line, and the marker just before it."""
    lines = path.read_text().splitlines()
    found, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, lang = m.group(1), m.group(2), m.group(3).lower()
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            j += 1
        body = [line[len(indent):] if line.startswith(indent) else line.lstrip() for line in lines[i + 1:j]]
        before = MARKER.match(lines[i - 1]) if i > 0 else None
        found.append({"lang": lang, "code": "\n".join(body) + "\n", "line": i + 1,
                      "marker": before.group(1) if before else None, "arg": before.group(2) if before else None})
        i = j + 1
    return found


def substitute_shell(code: str) -> str:
    """The shell substitutions of the module docstring, applied to each command of each line."""
    code = re.sub(r"\s*\\\n\s*", " ", code.replace(INSTALL_PREFIX, ""))
    out = []
    for line in code.splitlines():
        line = re.sub(r"\s+#\s.*$", "", line)  # a trailing comment
        parts = re.split(r"(\s*(?:&&|\|\||;)\s*)", line)
        for k, part in enumerate(parts):
            for name, var in MODEL_NAMES.items():  # a model named on any command: --model, --on-model
                part = re.sub(rf"(--model|--on-model)\s+{re.escape(name)}(?=\s|$)", rf'\1 "{var}"', part)
            if re.search(r"(^|\s)promptkit run(\s|$)", part):
                for name, var in SUITE_NAMES.items():
                    part = re.sub(rf"--suite\s+{re.escape(name)}(?=\s|$)", f'--suite "{var}"', part)
                if "--model" not in part:
                    part += ' --model "$PK_MODEL"'
                if "--suite" not in part:
                    part += ' --suite "$PK_SUITE"'
                extra = RUN_EXTRA
                if re.search(r"--templates\s+\S", part) and re.search(r"--max-variants\s+0(\s|$)", part):
                    extra = extra.replace(" --max-variants 4", "")  # a named set run whole keeps all its variants
                parts[k] = part + extra
            elif re.search(r"(^|\s)promptkit (rank|report)(\s|$)", part):
                parts[k] = part + STATS_EXTRA
        out.append("".join(parts))
    return "\n".join(out) + "\n"


DRIVER = textwrap.dedent('''
    import inspect, json, os, subprocess, sys, traceback
    steps = json.load(open(sys.argv[1]))
    os.environ.setdefault("MPLBACKEND", "Agg")
    import promptkit

    NAMES = {None: os.environ["PK_MODEL"], "gemma-3-270m": os.environ["PK_MODEL"], "default": os.environ["PK_MODEL"],
             "smollm2-135m-instruct": os.environ["PK_CHAT_MODEL"]}
    SUITES = {None: os.environ["PK_SUITE"], "offline_mc": os.environ["PK_SUITE"], "offline_gen": os.environ["PK_GEN_SUITE"]}
    def tiny(model):
        if isinstance(model, (list, tuple)):
            return [tiny(m) for m in model]
        return NAMES.get(model, model) if model is None or isinstance(model, str) else model
    real_evaluate, real_load_backend = promptkit.evaluate, promptkit.load_backend
    signature = inspect.signature(real_evaluate)
    def evaluate(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.arguments["model"] = tiny(bound.arguments.get("model"))
        suite = bound.arguments.get("suite")
        bound.arguments["suite"] = SUITES.get(suite, suite) if suite is None or isinstance(suite, str) else suite
        bound.arguments["limit"] = min(bound.arguments.get("limit") or 3, 3)
        bound.arguments["max_variants"] = min(bound.arguments.get("max_variants") or 4, 4)
        bound.arguments["progress"] = False
        return real_evaluate(*bound.args, **bound.kwargs)
    def load_backend(spec=None, **options):
        return real_load_backend(tiny(spec), **options)
    promptkit.evaluate, promptkit.load_backend = evaluate, load_backend

    namespace = {"__name__": "__main__"}
    for step in steps:
        where = f"{step['page']}:{step['line']}"
        print(f"==> {where} ({step['kind']})", flush=True)
        if step["kind"] == "file":
            os.makedirs(os.path.dirname(step["path"]) or ".", exist_ok=True)
            with open(step["path"], "w") as f:
                f.write(step["code"])
        elif step["kind"] == "bash":
            proc = subprocess.run(["bash", "-euo", "pipefail", "-c", step["code"]], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
            print(proc.stdout[-3000:], flush=True)
            if proc.returncode:
                print(f"FAILED {where}: exit status {proc.returncode}\\n{step['code']}", flush=True)
                sys.exit(1)
        else:
            try:
                exec(compile(step["code"], where, "exec"), namespace)
            except BaseException:
                traceback.print_exc()
                print(f"FAILED {where}\\n{step['code']}", flush=True)
                sys.exit(1)
    print("ALL BLOCKS RAN", flush=True)
''')


def steps_of(path: Path) -> list[dict]:
    page = str(path.relative_to(ROOT))
    steps = []
    for b in blocks(path):
        if b["marker"] == "illustrative" or b["code"].strip() == TEST_COMMAND:  # the test command would rerun the tests
            continue
        if b["marker"] == "file":
            steps.append({"kind": "file", "path": b["arg"], "code": b["code"], "page": page, "line": b["line"]})
        elif b["lang"] in RUN_LANGS:
            kind = RUN_LANGS[b["lang"]]
            code = substitute_shell(b["code"]) if kind == "bash" else b["code"]
            steps.append({"kind": kind, "code": code, "page": page, "line": b["line"]})
    return steps


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


# ---------------------------------------------------------------------------------------------- the pages' rules


def test_every_block_has_a_language_and_every_marker_a_reason():
    problems = []
    for path in PAGES:
        for b in blocks(path):
            where = f"{page_id(path)}:{b['line']}"
            if not b["lang"]:
                problems.append(f"{where}: a fenced block without a language (bash, python, yaml, text, ...)")
            if b["marker"] == "illustrative" and len(b["arg"]) < 10:
                problems.append(f"{where}: an illustrative block must say why it is not run")
            if b["marker"] == "file" and (not b["arg"] or b["arg"].startswith("/") or ".." in b["arg"]):
                problems.append(f"{where}: a file marker names a relative path inside the working folder")
        text = path.read_text()
        for m in re.finditer(r"<!--\s*(illustrative|file)\b(?!:)", text):
            problems.append(f"{page_id(path)}: marker without a colon at offset {m.start()}")
    assert not problems, "\n".join(problems)


def test_the_substitutions_keep_the_command_and_swap_the_model():
    default = 'promptkit run --model "$PK_MODEL" --suite "$PK_SUITE"' + RUN_EXTRA + "\n"
    assert substitute_shell(INSTALL_PREFIX + "promptkit run\n") == default
    two = substitute_shell("promptkit run --model gemma-3-270m --model smollm2-135m-instruct --suite offline_gen  # two\n")
    assert two == 'promptkit run --model "$PK_MODEL" --model "$PK_CHAT_MODEL" --suite "$PK_GEN_SUITE"' + RUN_EXTRA + "\n"
    chained = substitute_shell("promptkit lint my.yaml && promptkit run \\\n    --templates my.yaml\n")
    assert chained.startswith("promptkit lint my.yaml && promptkit run --templates my.yaml --model")
    assert substitute_shell("promptkit rank runs/mine --recommend\n") == "promptkit rank runs/mine --recommend" + STATS_EXTRA + "\n"
    whole = substitute_shell("promptkit run --templates demos --max-variants 0\n")
    assert "--max-variants 4" not in whole and "--limit 3" in whole
    assert substitute_shell("promptkit recommend runs/mine --task t.jsonl\n") == "promptkit recommend runs/mine --task t.jsonl\n"
    assert substitute_shell("promptkit rank runs/two --on-model smollm2-135m-instruct\n").startswith(
        'promptkit rank runs/two --on-model "$PK_CHAT_MODEL"')


def test_readme_is_short_and_keeps_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 10 * 1024, f"README.md is {len(text.encode())} bytes; the rest belongs in docs/"
    assert "\n" + INSTALL_PREFIX + "promptkit run\n" in text
    assert "\nbash scripts/test.sh\n" in text
    assert "manifest.json" in text


def test_readme_lists_every_command_and_its_links_resolve():
    from promptkit.cli import build_parser

    text = (ROOT / "README.md").read_text()
    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    missing = [name for name in sub.choices if f"`promptkit {name}" not in text]
    assert not missing, f"README's CLI at a glance lacks: {missing}"
    broken = [link for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
              if "://" not in link and not (ROOT / link).exists()]
    assert not broken, f"README links to missing files: {broken}"


def test_mkdocs_build_strict(tmp_path):
    started = time.monotonic()
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").is_file()
    cli = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert "--max-variants" in cli and "promptkit-recommend" in cli  # generated from the parser
    api = (tmp_path / "site" / "reference" / "api" / "index.html").read_text()
    assert "held_out_summary" in api and "RunOptions" in api  # from the docstrings
    assert time.monotonic() - started < 240


# ---------------------------------------------------------------------------------------------- running the pages


def build_chat_model(tiny_model: str | Path, folder: Path) -> Path:
    """A second tiny random model: a copy of the first with other weights and a chat template, for pages that
    compare two models or run chat variants."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    shutil.copytree(tiny_model, folder, dirs_exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(folder)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                         "{% if add_generation_prompt %}assistant:{% endif %}")
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def doc_env(tiny_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("docs-env")
    chat = build_chat_model(tiny_model, base / "tiny-chat")
    (base / "home").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROMPTKIT_", "OPENAI_"))}
    (base / "small.yaml").write_text(SMALL_SUITE)
    (base / "small_gen.yaml").write_text(SMALL_GEN_SUITE)
    env.update(HOME=str(base / "home"), PROMPTKIT_CACHE=str(base / "cache"), PK_MODEL=tiny_model,
               PK_CHAT_MODEL=str(chat), PK_SUITE=str(base / "small.yaml"), PK_GEN_SUITE=str(base / "small_gen.yaml"),
               NO_MKDOCS_2_WARNING="1", PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", MPLBACKEND="Agg",
               OMP_NUM_THREADS="1",
               PYTHONPATH=str(ROOT))
    return env


RUNNABLE = [p for p in PAGES if steps_of(p)]
WORKERS = 2  # pages run two at a time (each page's blocks in order); the machine has 2 cores
WARM = """
from promptkit.tasks.suites import load_suite, load_tasks
import os, sys
for path in sys.argv[1:]:
    load_tasks(load_suite(path))
"""


def run_page(page: Path, env: dict, folder: Path) -> tuple[int, str]:
    folder.mkdir(parents=True)
    (folder / "steps.json").write_text(json.dumps(steps_of(page)))
    (folder / "driver.py").write_text(DRIVER)
    (folder / "work").mkdir()
    try:
        proc = subprocess.run([sys.executable, str(folder / "driver.py"), str(folder / "steps.json")], cwd=folder / "work",
                              env=env, capture_output=True, text=True, timeout=PAGE_TIMEOUT)
    except subprocess.TimeoutExpired as exc:
        return -1, f"timed out after {PAGE_TIMEOUT} s\n{(exc.stdout or b'')[-4000:]!r}"
    ok = proc.returncode == 0 and "ALL BLOCKS RAN" in proc.stdout
    return (0 if ok else proc.returncode or 1), proc.stdout[-6000:] + proc.stderr[-3000:]


@pytest.fixture(scope="module")
def page_results(request, doc_env, tmp_path_factory) -> dict:
    """Every selected page run once: the generated tasks the pages use made first (so no two pages make one at the
    same moment), then the pages, WORKERS at a time, sharing one result cache (SQLite, safe across processes)."""
    from concurrent.futures import ThreadPoolExecutor

    wanted = [item.callspec.params["page"] for item in request.session.items
              if getattr(item, "originalname", "") == "test_page_blocks_run" and hasattr(item, "callspec")]
    base = tmp_path_factory.mktemp("pages")
    warm = base / "warm.yaml"
    warm.write_text("name: warm\nselection: [generated:roman_numeral]\n")
    subprocess.run([sys.executable, "-c", WARM, doc_env["PK_SUITE"], doc_env["PK_GEN_SUITE"], str(warm)],
                   env=doc_env, check=True, capture_output=True, timeout=PAGE_TIMEOUT)
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = {page: pool.submit(run_page, page, doc_env, base / f"page{i}") for i, page in enumerate(wanted)}
        return {page: future.result() for page, future in futures.items()}


@pytest.mark.parametrize("page", RUNNABLE, ids=page_id)
def test_page_blocks_run(page, page_results):
    status, output = page_results[page]
    assert status == 0, output
