#!/usr/bin/env bash
# leadflow report beside leadflow replay on the same generated history (issue: the report
# takes at most twice the replay). Prints each command's wall time per run, the spread, and
# the ratio of the medians; nothing is judged.
#
#   bash benches/report_vs_replay.sh [--events 3000000] [--runs 3]
set -euo pipefail
cd "$(dirname "$0")/.."
events=3000000
runs=3
while [ $# -gt 0 ]; do
  case "$1" in
    --events) events=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    *) echo "usage: $0 [--events N] [--runs N]" >&2; exit 2 ;;
  esac
done
leads=$((events / 3))
[ -x /usr/bin/time ] || { echo "$0: needs GNU time (Debian package time)" >&2; exit 2; }
cargo build --locked --release --quiet --bin leadflow
bin=./target/release/leadflow
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
history="$work/history.jsonl"
"$bin" gen --leads "$leads" --events "$events" --span 120d -o "$history"
config=examples/config.toml
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB"
echo "history: $events events, $leads leads, $(du -m "$history" | cut -f1) MB"

# time_runs NAME CMD...: prints each run's seconds and peak RSS, then the median.
declare -A median
time_runs() {
  local name=$1; shift
  local times=()
  for i in $(seq 1 "$runs"); do
    local t
    /usr/bin/time -o "$work/time" -f "%e %M" "$@" >/dev/null 2>&1
    t=$(tail -1 "$work/time")
    times+=("${t%% *}")
    printf '  %-28s run %d: %6.2f s, peak RSS %5d MB\n' "$name" "$i" "${t%% *}" "$(( ${t##* } / 1024 ))"
  done
  median[$name]=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  local lo hi
  lo=$(printf '%s\n' "${times[@]}" | sort -n | head -1)
  hi=$(printf '%s\n' "${times[@]}" | sort -n | tail -1)
  printf '  %-28s median %6.2f s (%s..%s), %.2f M events/s\n' "$name" "${median[$name]}" "$lo" "$hi" \
    "$(awk -v e="$events" -v t="${median[$name]}" 'BEGIN {print e / t / 1e6}')"
}
time_runs replay "$bin" replay --config "$config" "$history" -o /dev/null
time_runs report "$bin" report --config "$config" "$history" -o /dev/null
time_runs "report, sweep of 5" "$bin" report --config "$config" "$history" -o /dev/null \
  --sweep funnel.mql_threshold=60,80,100,120,140
printf 'report / replay: %.2f; sweep of 5 / report: %.2f (6 definitions, one read of the file)\n' \
  "$(awk -v a="${median[report]}" -v b="${median[replay]}" 'BEGIN {print a / b}')" \
  "$(awk -v a="${median["report, sweep of 5"]}" -v b="${median[report]}" 'BEGIN {print a / b}')"
