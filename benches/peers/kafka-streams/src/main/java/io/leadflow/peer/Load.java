package io.leadflow.peer;

import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Properties;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.EncoderFactory;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.utils.Utils;

/**
 * A development tool (not used by the benchmark, which loads its own input): produces a JSON
 * Lines event file to an internal topic as Avro InternalRecords keyed by lead, to the
 * partition leadflow's ingest would choose (murmur2 of the key), optionally with a tick
 * record after every N events on each partition.
 *
 * <pre>java -cp leadflow-peer-kafka-streams.jar io.leadflow.peer.Load --bootstrap HOST:PORT --topic TOPIC [--ticks-every N] FILE.jsonl</pre>
 */
public final class Load {
    public static void main(String[] args) throws IOException {
        String bootstrap = null, topic = null, file = null;
        long ticksEvery = 0;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--bootstrap" -> bootstrap = args[++i];
                case "--topic" -> topic = args[++i];
                case "--ticks-every" -> ticksEvery = Long.parseLong(args[++i]);
                default -> file = args[i];
            }
        }
        if (bootstrap == null || topic == null || file == null) {
            System.err.println("usage: java -cp leadflow-peer-kafka-streams.jar io.leadflow.peer.Load --bootstrap HOST:PORT --topic TOPIC [--ticks-every N] FILE.jsonl");
            System.exit(2);
        }
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.LINGER_MS_CONFIG, 20);
        p.put(ProducerConfig.BATCH_SIZE_CONFIG, 1 << 20);
        long sent = 0, ticks = 0, bad = 0;
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p, new ByteArraySerializer(), new ByteArraySerializer());
             BufferedReader in = Files.newBufferedReader(Path.of(file), StandardCharsets.UTF_8)) {
            int partitions = producer.partitionsFor(topic).size();
            long[] perPartition = new long[partitions];
            long clock = 0;
            Event ev = new Event();
            String line;
            while ((line = in.readLine()) != null) {
                if (line.isBlank() || Replay.parse(line, ev) != null || ev.invalidReason() != null) {
                    bad++;
                    continue;
                }
                byte[] key = ev.leadKey.getBytes(StandardCharsets.UTF_8);
                int partition = Utils.toPositive(Utils.murmur2(key)) % partitions;
                producer.send(new ProducerRecord<>(topic, partition, key, encode(ev)));
                sent++;
                clock = Math.max(clock, ev.occurredAt);
                if (ticksEvery > 0 && ++perPartition[partition] % ticksEvery == 0) {
                    producer.send(new ProducerRecord<>(topic, partition, null, encodeTick(clock)));
                    ticks++;
                }
            }
            producer.flush();
        }
        System.err.printf("load: %d events, %d ticks to %s (%d lines skipped)%n", sent, ticks, topic, bad);
    }

    /** An Event as an InternalRecord (plain Avro binary, union branch 0). */
    static byte[] encode(Event ev) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream(128);
        BinaryEncoder enc = EncoderFactory.get().directBinaryEncoder(out, null);
        enc.writeIndex(0);
        enc.writeString(ev.eventId);
        enc.writeString(ev.leadKey);
        enc.writeLong(ev.occurredAt);
        enc.writeEnum(ev.source);
        enc.writeString(ev.type);
        enc.writeMapStart();
        enc.setItemCount(ev.attributeCount());
        for (int i = 0; i < ev.attributeCount(); i++) {
            enc.startItem();
            enc.writeString(ev.attributeKey(i));
            enc.writeString(ev.attributeValue(i));
        }
        enc.writeMapEnd();
        enc.flush();
        return out.toByteArray();
    }

    /** A Tick as an InternalRecord (union branch 1). */
    static byte[] encodeTick(long time) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream(16);
        BinaryEncoder enc = EncoderFactory.get().directBinaryEncoder(out, null);
        enc.writeIndex(1);
        enc.writeLong(time);
        enc.flush();
        return out.toByteArray();
    }
}
