#!/usr/bin/env bash
# End-to-end benchmark through a Kafka-protocol broker (see benches/e2e.rs for what is measured
# and the E2E_* settings). Builds the release binary, then prints one table.
#   benches/e2e.sh                          # 1M leads, 3M backlog events, 20k events/s for 30 s
#   E2E_LEADS=100000 E2E_EVENTS=300000 benches/e2e.sh   # a quick run
#   E2E_BROKERS=kafka:9092 benches/e2e.sh   # against real Kafka (creates its own topics)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin leadflow
cargo bench --locked --bench e2e
