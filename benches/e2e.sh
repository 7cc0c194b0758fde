#!/usr/bin/env bash
# End-to-end benchmark through a Kafka-protocol broker (see benches/e2e.rs for what is measured
# and the E2E_* settings). Builds the release binary, then prints one table per broker.
#   benches/e2e.sh                          # 1M leads, 3M backlog events, 20k events/s for 30 s,
#                                           # on the mock, then on Apache Kafka (kafka-local)
#   E2E_LEADS=100000 E2E_EVENTS=300000 benches/e2e.sh   # a quick run
#   E2E_BROKER=mock benches/e2e.sh          # one broker: mock, kafka (started here, needs Java
#                                           # and Maven) or external (E2E_BROKERS=host:9092)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin leadflow
which=${E2E_BROKER:-both}
[ -n "${E2E_BROKERS:-}" ] && which=${E2E_BROKER:-external}

if [ "$which" = mock ] || [ "$which" = both ]; then
  echo "== librdkafka's mock cluster"
  E2E_BROKERS= cargo bench --locked --bench e2e
fi
if [ "$which" = external ]; then
  echo "== $E2E_BROKERS"
  cargo bench --locked --bench e2e
fi
if [ "$which" = kafka ] || [ "$which" = both ]; then
  kafka=deploy/kafka-local/kafka-local
  if ! command -v java >/dev/null || ! command -v mvn >/dev/null; then
    echo "e2e: Java and Maven are needed for Apache Kafka (deploy/kafka-local); skipped" >&2
    exit 0
  fi
  export KAFKA_LOCAL_PORT=${KAFKA_LOCAL_PORT:-19192}
  trap '"$kafka" stop >/dev/null 2>&1 || true' EXIT
  brokers=$("$kafka" start)
  echo "== Apache Kafka at $brokers (deploy/kafka-local)"
  E2E_BROKERS=$brokers cargo bench --locked --bench e2e
fi
