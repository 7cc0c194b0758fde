#!/usr/bin/env bash
# Peer benchmark: leadflow's state stage and a Kafka Streams application doing the same core
# job (benches/peers/kafka-streams/README.md), one after the other on one Apache Kafka broker
# started here (deploy/kafka-local), the same input, the same CPU. Prints one table: events/s,
# events per CPU-second, CPU-seconds per million events, peak RSS and produce-to-output
# latency p50/p99 at a fixed rate, with the ratios; fails when the two emit a different
# number of MQL transitions (what is measured: benches/peers.rs).
#   benches/peers/run.sh                                   # 1M leads, 3M events, 20k/s for 30 s
#   PEER_LEADS=100000 PEER_EVENTS=300000 PEER_LATENCY_SECS=10 benches/peers/run.sh  # quick
#   PEER_ONLY=streams benches/peers/run.sh                 # one processor
# Needs Java 17+, Maven (Maven Central) and taskset (util-linux).
set -euo pipefail
cd "$(dirname "$0")/../.."
for tool in java mvn taskset; do
  command -v "$tool" >/dev/null || { echo "peers: $tool is needed" >&2; exit 1; }
done
cargo build --release --locked --bin leadflow
cargo bench --locked --bench peers --no-run
(cd benches/peers/kafka-streams && mvn -q -B -Dstyle.color=never package -DskipTests)

# Two or more CPUs: the broker and the driver on CPU 0, each processor alone on CPU 1 (the
# same core for both). One CPU: everything shares it.
if [ "$(nproc)" -ge 2 ]; then
  export PEER_CPUS=${PEER_CPUS:-1}
  pin=(taskset -c 0)
else
  export PEER_CPUS=${PEER_CPUS:-0}
  pin=()
fi
export KAFKA_LOCAL_PORT=${KAFKA_LOCAL_PORT:-19392}
kafka=deploy/kafka-local/kafka-local
# Its own broker, pinned: one already on the port would be measured unpinned, and stopped.
if "$kafka" status >/dev/null 2>&1; then
  echo "peers: a broker already runs on port $KAFKA_LOCAL_PORT; stop it or set KAFKA_LOCAL_PORT" >&2
  exit 1
fi
trap '"$kafka" stop >/dev/null 2>&1 || true' EXIT
PEER_BROKERS=$("${pin[@]}" "$kafka" start)
export PEER_BROKERS
PEER_BROKER_PID=$("$kafka" status | sed -n 's/.*(pid \([0-9]*\)).*/\1/p')
export PEER_BROKER_PID
echo "== Apache Kafka at $PEER_BROKERS (deploy/kafka-local), pinned to CPU 0"
"${pin[@]}" cargo bench --locked --bench peers
