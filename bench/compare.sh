#!/usr/bin/env bash
# Issue 13's five figures for two trees, measured one after the other in one session so both see
# the same machine: for each configuration, the BASE tree's perf_ratio run, then HEAD's.
#   bench/compare.sh BASE_TREE HEAD_TREE [OUT_DIR]     (trees: checkouts, e.g. `git worktree add`)
# Prints each run's median ratio; the full output of each run is in OUT_DIR (default bench-out/).
# EVERYTHING=1 runs every configuration with bench/perf-template.toml (risk rules and fee plans on, as
# the issue's targets ask), not only "features"; RATE= is the open loop's rate (default 1,500/s).
set -euo pipefail
base=$(cd "$1" && pwd); head=$(cd "$2" && pwd); out=${3:-bench-out}
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$here/.tox/py3/bin/python}
ratio=${PERF_RATIO:-$here/../shared/bench/perf_ratio.py}
template=$head/bench/perf-template.toml
mkdir -p "$out"
every=""
[ "${EVERYTHING:-0}" = 1 ] && every="--template $template"
declare -A configs=(
  [default]="--pairs 3 --seconds 10 $every"
  [features]="--pairs 3 --seconds 10 --template $template"
  [pg]="--pairs 3 --seconds 10 --pg $every"
  [single]="--pairs 3 --seconds 10 --conns 1 --depth 1 $every"
  [rate]="--pairs 3 --seconds 10 --rate ${RATE:-1500} $every"
)
names="default features pg single rate"
[ -n "$every" ] && names="features pg single rate"  # default would repeat features
for name in $names; do
  for side in base head; do
    tree=${!side}
    # shellcheck disable=SC2086
    (cd "$tree" && PYTHONPATH=$tree "$py" "$ratio" ${configs[$name]}) > "$out/$side-$name.txt" 2>&1
    echo "$side $name: $(tail -n 1 "$out/$side-$name.txt")"
  done
done
