package io.leadflow.peer;

import java.time.Duration;
import java.util.Arrays;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;

/** The Kafka Streams application (and {@code replay FILE}, which runs {@link Replay}). */
public final class Main {
    static final String USAGE = String.join("\n",
            "usage: java -jar leadflow-peer-kafka-streams.jar --bootstrap HOST:PORT --input TOPIC --output TOPIC",
            "           --application-id ID --state-dir DIR [--threads N] [--commit-interval-ms MS]",
            "       java -jar leadflow-peer-kafka-streams.jar replay FILE.jsonl|-",
            "  --bootstrap           bootstrap.servers",
            "  --input               the internal topic (Avro InternalRecord values, keyed by lead)",
            "  --output              where MQL transitions go (JSON values, keyed by lead)",
            "  --application-id      application.id (also the consumer group)",
            "  --state-dir           state.dir (RocksDB stores)",
            "  --threads             num.stream.threads (default 1)",
            "  --commit-interval-ms  commit.interval.ms (default: Kafka Streams' 100 under exactly_once_v2)");

    public static void main(String[] args) throws Exception {
        if (args.length > 0 && args[0].equals("replay")) {
            Replay.main(Arrays.copyOfRange(args, 1, args.length));
            return;
        }
        String bootstrap = null, input = null, output = null, appId = null, stateDir = null, commitMs = null;
        int threads = 1;
        for (int i = 0; i < args.length; i++) {
            String flag = args[i];
            if (flag.equals("-h") || flag.equals("--help")) {
                System.out.println(USAGE);
                return;
            }
            if (i + 1 >= args.length) {
                fail(flag + " needs a value");
            }
            String v = args[++i];
            switch (flag) {
                case "--bootstrap" -> bootstrap = v;
                case "--input" -> input = v;
                case "--output" -> output = v;
                case "--application-id" -> appId = v;
                case "--state-dir" -> stateDir = v;
                case "--threads" -> threads = Integer.parseInt(v);
                case "--commit-interval-ms" -> commitMs = v;
                default -> fail("unknown flag " + flag);
            }
        }
        if (bootstrap == null || input == null || output == null || appId == null || stateDir == null) {
            fail("--bootstrap, --input, --output, --application-id and --state-dir are required");
        }

        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, threads);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir);
        if (commitMs != null) {
            p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, Long.parseLong(commitMs));
        }
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");

        KafkaStreams streams = new KafkaStreams(MqlProcessor.topology(input, output), p);
        CountDownLatch stopped = new CountDownLatch(1);
        AtomicBoolean failed = new AtomicBoolean();
        AtomicBoolean terminating = new AtomicBoolean();
        streams.setStateListener((now, before) -> {
            if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.NOT_RUNNING) {
                stopped.countDown();
            }
        });
        streams.setUncaughtExceptionHandler(e -> {
            System.err.println("leadflow-peer: stream thread failed: " + e);
            failed.set(true);
            return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
        });
        // On SIGTERM: commit, close, and leave the group, so that a restart is assigned its
        // partitions at once instead of after the old member's session timeout.
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            terminating.set(true);
            streams.close(new KafkaStreams.CloseOptions().timeout(Duration.ofSeconds(20)).leaveGroup(true));
            stopped.countDown();
        }, "leadflow-peer-shutdown"));

        System.err.printf("leadflow-peer: Kafka Streams %s, application.id %s, %s -> %s, %d thread(s), exactly_once_v2, commit.interval.ms %s%n",
                org.apache.kafka.common.utils.AppInfoParser.getVersion(), appId, input, output, threads,
                commitMs == null ? "100 (default)" : commitMs);
        streams.start();
        stopped.await();
        if (!terminating.get()) {
            // Stopped on its own (an error): close and report.
            streams.close(Duration.ofSeconds(20));
            System.err.println("leadflow-peer: stopped: " + streams.state());
            System.exit(failed.get() || streams.state() == KafkaStreams.State.ERROR ? 1 : 0);
        }
    }

    private static void fail(String message) {
        System.err.println("leadflow-peer: " + message + "\n" + USAGE);
        System.exit(2);
    }
}
