#!/usr/bin/env bash
# Issue 13's five figures for two trees, measured one after the other in one session so both see
# the same machine: for each configuration, the BASE tree's perf_ratio run, then HEAD's.
#   bench/compare.sh BASE_TREE HEAD_TREE [OUT_DIR]     (trees: checkouts, e.g. `git worktree add`)
# Prints each run's median ratio; the full output of each run is in OUT_DIR (default bench-out/).
# EVERYTHING=1 runs every configuration with bench/perf-template.toml (risk rules and fee plans on, as
# the issue's targets ask), not only "features"; RATE= is the open loop's rate (default 1,500/s).
# ABBA=1 runs each configuration base, head, head, base and also prints each tree's median ratio over
# both of its runs' pairs: on a machine whose speed drifts, whichever tree runs first otherwise gains.
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
order="base head"
[ "${ABBA:-0}" = 1 ] && order="base head head2 base2"
for name in $names; do
  for run in $order; do
    side=${run%2}
    tree=${!side}
    # shellcheck disable=SC2086
    (cd "$tree" && PYTHONPATH=$tree "$py" "$ratio" ${configs[$name]}) > "$out/$run-$name.txt" 2>&1
    echo "$run $name: $(tail -n 1 "$out/$run-$name.txt")"
  done
  if [ "${ABBA:-0}" = 1 ]; then
    for side in base head; do  # the pairs' ratios are the last line's parenthesised list
      echo "$side $name, both runs: median $(tail -q -n 1 "$out/$side-$name.txt" "$out/${side}2-$name.txt" |
        "$py" -c 'import re, statistics, sys; print(statistics.median(float(r) for r in re.findall(r"\d+\.\d+", " ".join(re.findall(r"\(([^)]*)\)", sys.stdin.read())))))')"
    done
  fi
done
