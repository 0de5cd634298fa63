#!/usr/bin/env bash
# The prepared GPU run (issue 16), one command on a CUDA machine (an H200: about 8 minutes):
#   1. the test suite on CuPy, torch CUDA and JAX GPU;
#   2. the conformance check of everything that runs on the GPU (`attnspec check --device cuda`);
#   3. the bf16 D=128 benchmarks, N = 1k..64k (benchmarks/gpu_bench.py).
# Every step has its own time budget; a step that fails or runs out is recorded and the next one
# still runs. Results under OUT: steps.tsv (step, exit status, seconds), one log per step,
# check.json, gpu-bench.json and gpu-bench.md (the table for docs/performance.md).
#
# The GPU machine has torch, JAX and CuPy but no attnspec and cannot download: prepare the
# wheels here first (attnspec built from this checkout, array-api-compat, array-api-strict):
#     bash benchmarks/gpu.sh --prepare-wheels .whl
# then, there:      bash benchmarks/gpu.sh --wheels .whl --out "$OUT"
# and on any CPU:   bash benchmarks/gpu.sh --dry-run --out /tmp/gpu-dry   (what the tests run)
set -u
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
out="gpu-results" wheels="" dry=0 prepare=""
python="${PYTHON:-python3}"
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --wheels) wheels="$2"; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --prepare-wheels) prepare="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if [ -n "$prepare" ]; then
  # Pure-Python wheels: one build of each serves the GPU machine's Python whatever its version.
  mkdir -p "$prepare" || exit 1
  "$python" -m pip wheel -q --no-deps --no-build-isolation -w "$prepare" "$root" || exit 1
  for pkg in array_api_compat array_api_strict; do
    version="$("$python" -c "import importlib.metadata as m; print(m.version('${pkg//_/-}'))")" \
      || { echo "gpu.sh: ${pkg//_/-} is not installed here" >&2; exit 1; }
    "$python" -m pip download -q --no-deps --only-binary=:all: -d "$prepare" \
      "${pkg//_/-}==$version" || exit 1
  done
  ls "$prepare"
  exit 0
fi

mkdir -p "$out" || exit 1
out="$(cd "$out" && pwd)"
if [ -n "$wheels" ]; then
  site="$(mktemp -d)"
  "$python" -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl \
    || { echo "gpu.sh: installing the wheels in $wheels failed" >&2; exit 1; }
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
"$python" -c "import attnspec.conformance, array_api_compat" 2>/dev/null || {
  echo "gpu.sh: attnspec (installed, with its conformance suite) and array-api-compat are" \
       "needed: pip install -e . here, or --wheels DIR from --prepare-wheels" >&2; exit 1; }

if [ "$dry" = 1 ]; then
  # The same steps on the CPU, each cut to seconds: checks the script, not the GPU.
  tests=(--backend numpy -p no:randomly -n 0 tests/test_closed_forms.py -k "numpy and causal")
  check=(attnspec[numpy] --select "causal*" --no-fingerprint --timeout 60)
  bench=(--dry-run)
  budget_tests=120 budget_check=120 budget_bench=120
else
  tests=(--backend cupy --backend torch-cuda --backend jax-gpu -n 8 tests)
  check=(--device cuda --timeout 120)
  bench=()
  budget_tests=270 budget_check=120 budget_bench=150
fi

printf 'step\texit\tseconds\n' > "$out/steps.tsv"
step() {  # step NAME BUDGET COMMAND...: run it under its budget, log it, record how it ended
  local name="$1" budget="$2"; shift 2
  local start=$SECONDS
  echo "== $name (at most ${budget}s): $*"
  timeout --signal=TERM --kill-after=20 "$budget" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" >> "$out/steps.tsv"
  tail -n 5 "$out/$name.log"
  [ "$rc" = 124 ] && echo "== $name: out of time (${budget}s)"
  return 0
}

cd "$root" || exit 1
step env 60 "$python" -c "
import platform, subprocess, attnspec
print('python', platform.python_version(), 'attnspec', attnspec.__version__)
for name in ('torch', 'jax', 'cupy', 'array_api_compat'):
    try:
        module = __import__(name)
        print(name, module.__version__)
    except Exception as exc:
        print(name, 'not usable:', type(exc).__name__, exc)
try:
    print(subprocess.run(['nvidia-smi', '-L'], capture_output=True, text=True).stdout)
except OSError:
    print('nvidia-smi: not found')
"
step tests "$budget_tests" "$python" -m pytest -q -p no:cacheprovider "${tests[@]}"
step check "$budget_check" "$python" -m attnspec check "${check[@]}" --color never \
  --json "$out/check.json"
step bench "$budget_bench" "$python" "$here/gpu_bench.py" --out "$out" "${bench[@]}"
cat "$out/steps.tsv"
[ -f "$out/gpu-bench.md" ] && cat "$out/gpu-bench.md"
# Exit status: 0 when every step exited 0 or with 1 (test failures and conformance findings
# are results, written to the logs and JSON); else the first other status.
awk -F'\t' 'NR > 1 && $2 != 0 && $2 != 1 { print $2; exit }' "$out/steps.tsv" | {
  read -r bad && exit "$bad"; exit 0; }
