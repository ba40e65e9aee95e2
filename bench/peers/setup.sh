#!/usr/bin/env bash
# Creates one virtualenv per peer under bench/.venvs/<peer> and installs that peer at a
# pinned version (the pins below were verified to install on the benchmark machine).
# Idempotent: a venv whose marker file matches its pin list is left alone.
# Usage: bench/peers/setup.sh [peer ...]      (default: all peers + the chart venv)
set -u
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BENCH="$(dirname "$HERE")"
VENVS="$BENCH/.venvs"
PY="${PYTHON:-python3}"
mkdir -p "$VENVS"

# hiredis goes into every venv: redis-py picks it up automatically, so every peer gets the
# same fast reply parser that jobq uses.
declare -A PINS=(
  [celery]="celery[redis]==5.7.0 hiredis"
  [rq]="rq==2.12.0 hiredis"
  [dramatiq]="dramatiq[redis]==2.2.1 hiredis"
  [arq]="arq==0.28.0 hiredis"
  [saq]="saq[hiredis]==0.26.4 typing_extensions"
  [taskiq]="taskiq==0.13.0 taskiq-redis==1.2.4 hiredis"
  [huey]="huey==3.5.4 redis==8.1.0 hiredis"
  [streaq]="streaq==7.2.0 redis==8.1.0 hiredis"
  [_plot]="matplotlib==3.11.2"
)
ALL=(celery rq dramatiq arq saq taskiq huey streaq _plot)

if [ "$#" -gt 0 ]; then WANT=("$@"); else WANT=("${ALL[@]}"); fi

failed=()
for peer in "${WANT[@]}"; do
  pins="${PINS[$peer]:-}"
  if [ -z "$pins" ]; then echo "setup: unknown peer '$peer'" >&2; failed+=("$peer"); continue; fi
  venv="$VENVS/$peer"
  marker="$venv/.jobq-bench-pins"
  if [ -f "$marker" ] && [ "$(cat "$marker")" = "$pins" ]; then
    echo "setup: $peer already installed ($pins)"
    continue
  fi
  echo "setup: installing $peer: $pins"
  rm -rf "$venv"
  # shellcheck disable=SC2086
  if "$PY" -m venv "$venv" \
     && "$venv/bin/python" -m pip install -q --disable-pip-version-check $pins; then
    echo "$pins" > "$marker"
    echo "setup: $peer ok"
  else
    echo "setup: $peer FAILED to install" >&2
    failed+=("$peer")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "setup: failed: ${failed[*]} (the comparison reports them as not installed)" >&2
fi
# A peer that fails to install must not stop the benchmark: compare.py reports it.
exit 0
