#!/usr/bin/env bash
# The regression guard: a fast subset of the benchmarks whose figures CI prints on every run,
# so a slowdown is seen in the log of the change that brought it. Nothing is judged: timings
# on a shared 2-core machine vary run to run (criterion prints each figure's range).
#
# - `cargo bench --bench core` with LEADFLOW_BENCH_GUARD=1: engine apply (10k leads), JSON and
#   Avro decoding, replay of 200k events, each measured for 1.5 s after 0.3 s of warm-up;
# - `cargo bench --bench memory` at 200k leads: RSS per lead and its breakdown;
# - benches/report_vs_replay.sh on 300k events: replay and report as whole commands.
#
#   bash benches/guard.sh
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS
cargo bench --locked --bench core --no-run --quiet 2>/dev/null || cargo bench --locked --bench core --no-run
cargo bench --locked --bench memory --no-run --quiet 2>/dev/null || cargo bench --locked --bench memory --no-run
# The binary the report bench times, built here so the figures' time is only measuring.
cargo build --locked --release --quiet --bin leadflow
built=$SECONDS
echo "guard: benchmarks built in $((built - started)) s"
LEADFLOW_BENCH_GUARD=1 cargo bench --locked --quiet --bench core -- \
  --warm-up-time 0.3 --measurement-time 1.5 --noplot 2>&1 \
  | grep -E '^[a-z_]+/|time:|thrpt:' || true
MEM_LEADS=200000 cargo bench --locked --quiet --bench memory 2>&1 | grep '^memory:' || true
bash benches/report_vs_replay.sh --events 300000 --runs 1
echo "guard: figures measured in $((SECONDS - built)) s (plus $((built - started)) s building)"
