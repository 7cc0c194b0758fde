#!/usr/bin/env bash
# Soak run, not in CI: leadflow run for SOAK_MINUTES (30) at SOAK_RATE (2000) events/s with
# the [limits] bounds on, a line per minute (RSS, lag, snapshot age, leads, evictions).
#   benches/soak.sh
#   SOAK_MINUTES=5 SOAK_RATE=5000 benches/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin leadflow
cargo bench --locked --bench soak
