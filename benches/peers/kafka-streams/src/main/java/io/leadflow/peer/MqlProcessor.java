package io.leadflow.peer;

import java.util.concurrent.atomic.AtomicLong;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * The processor: internal record in, lead state read-modify-written in a persistent
 * (RocksDB, changelogged) store, one JSON transition out when the lead becomes an MQL.
 */
public final class MqlProcessor implements Processor<byte[], byte[], String, String> {
    public static final String STORE = "leads";

    /** Undecodable or invalid records seen by all processors of this JVM (each also printed, up to a few). */
    static final AtomicLong BAD_RECORDS = new AtomicLong();
    private static final int PRINTED_ERRORS = 10;

    private final Scoring scoring;
    private final InternalRecordDecoder decoder = new InternalRecordDecoder();
    private final Event ev = new Event();
    private final LeadState state;
    private ProcessorContext<String, String> context;
    private KeyValueStore<String, byte[]> store;

    public MqlProcessor(Scoring scoring) {
        this.scoring = scoring;
        this.state = scoring.newState();
    }

    /** Source (internal topic) -> this processor with the {@code leads} store -> sink (output topic). */
    public static Topology topology(String input, String output) {
        Scoring scoring = new Scoring();
        Topology t = new Topology();
        t.addSource("internal", Serdes.ByteArray().deserializer(), Serdes.ByteArray().deserializer(), input);
        t.addProcessor("mql", () -> new MqlProcessor(scoring), "internal");
        t.addStateStore(
                Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore(STORE), Serdes.String(), Serdes.ByteArray())
                        .withCachingEnabled(),
                "mql");
        t.addSink("transitions", output, Serdes.String().serializer(), Serdes.String().serializer(), "mql");
        return t;
    }

    @Override
    public void init(ProcessorContext<String, String> context) {
        this.context = context;
        this.store = context.getStateStore(STORE);
    }

    @Override
    public void process(Record<byte[], byte[]> record) {
        try {
            if (!decoder.decode(record.value(), ev)) {
                return; // a tick: leadflow's clock, no lead
            }
        } catch (Exception e) {
            bad(record, "undecodable: " + e.getMessage());
            return;
        }
        String invalid = ev.invalidReason();
        if (invalid != null) {
            bad(record, invalid);
            return;
        }
        // The lead is the event's lead_key (also the message key, SPEC §2).
        String key = ev.leadKey;
        scoring.load(state, store.get(key), ev);
        int result = scoring.apply(state, ev);
        if (result == Scoring.DUPLICATE) {
            return;
        }
        store.put(key, state.encode());
        if (result == Scoring.MQL) {
            String json = Scoring.transitionJson(key, ev.occurredAt, ev.eventId, scoring.mqlScore(state, ev.occurredAt));
            context.forward(new Record<>(key, json, record.timestamp()));
        }
    }

    private void bad(Record<byte[], byte[]> record, String reason) {
        long n = BAD_RECORDS.incrementAndGet();
        if (n <= PRINTED_ERRORS) {
            String where = context.recordMetadata()
                    .map(m -> m.topic() + "/" + m.partition() + "@" + m.offset())
                    .orElse("?");
            System.err.println("leadflow-peer: skipped record " + where + ": " + reason
                    + (n == PRINTED_ERRORS ? " (further ones are not printed)" : ""));
        }
    }
}
