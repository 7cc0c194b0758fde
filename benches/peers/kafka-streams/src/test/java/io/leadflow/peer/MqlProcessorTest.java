package io.leadflow.peer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.EncoderFactory;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.TestInputTopic;
import org.apache.kafka.streams.TestOutputTopic;
import org.apache.kafka.streams.TopologyTestDriver;
import org.apache.kafka.streams.state.KeyValueStore;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The topology under TopologyTestDriver (exactly_once_v2, the RocksDB store), fed with
 * InternalRecords that the Avro library encodes from leadflow's own schema file. Expected
 * values are worked by hand from SPEC §4-§5 under benches/peers/config.toml.
 */
class MqlProcessorTest {
    static final long T0 = 1_793_491_200_000L; // 2026-11-01T00:00:00Z
    static final long HOUR = 3_600_000L;
    static final long DAY = 24 * HOUR;
    static final double H = 14 * DAY;

    static Schema schema;
    static Schema eventSchema;
    static Schema tickSchema;

    @TempDir
    Path stateDir;
    TopologyTestDriver driver;
    TestInputTopic<byte[], byte[]> in;
    TestOutputTopic<String, String> out;

    @BeforeEach
    void setUp() throws IOException {
        if (schema == null) {
            // leadflow's schema, as the repository has it (tests run in benches/peers/kafka-streams).
            schema = new Schema.Parser().parse(new File("../../../schemas/internal_record.avsc"));
            Schema body = schema.getField("body").schema();
            eventSchema = body.getTypes().get(0);
            tickSchema = body.getTypes().get(1);
        }
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, "peer-test");
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, "unused:9092");
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        driver = new TopologyTestDriver(MqlProcessor.topology("events", "transitions"), p);
        in = driver.createInputTopic("events", new ByteArraySerializer(), new ByteArraySerializer());
        out = driver.createOutputTopic("transitions", new StringDeserializer(), new StringDeserializer());
    }

    @AfterEach
    void tearDown() {
        driver.close();
    }

    static byte[] avro(GenericRecord body) throws IOException {
        GenericRecord rec = new GenericData.Record(schema);
        rec.put("body", body);
        ByteArrayOutputStream bytes = new ByteArrayOutputStream();
        BinaryEncoder enc = EncoderFactory.get().binaryEncoder(bytes, null);
        new GenericDatumWriter<GenericRecord>(schema).write(rec, enc);
        enc.flush();
        return bytes.toByteArray();
    }

    static byte[] event(String id, String lead, long t, String source, String type, String... attrs) throws IOException {
        GenericRecord e = new GenericData.Record(eventSchema);
        e.put("event_id", id);
        e.put("lead_key", lead);
        e.put("occurred_at", t);
        e.put("source", new GenericData.EnumSymbol(eventSchema.getField("source").schema(), source));
        e.put("type", type);
        Map<String, String> a = new HashMap<>();
        for (int i = 0; i + 1 < attrs.length; i += 2) {
            a.put(attrs[i], attrs[i + 1]);
        }
        e.put("attributes", a);
        return avro(e);
    }

    static byte[] tick(long t) throws IOException {
        GenericRecord tk = new GenericData.Record(tickSchema);
        tk.put("time", t);
        return avro(tk);
    }

    void send(String lead, byte[] value) {
        in.pipeInput(lead.getBytes(), value);
    }

    /** Output records as (key, JSON), parsed enough to check. */
    List<KeyValue<String, String>> drain() {
        return out.readKeyValuesToList();
    }

    static double pow2(double x) {
        return Math.pow(2.0, x);
    }

    static String json(String lead, long at, String id, double score) {
        return "{\"lead_key\":\"" + lead + "\",\"from\":\"new\",\"to\":\"mql\",\"at\":" + at
                + ",\"event_id\":\"" + id + "\",\"score\":" + score + "}";
    }

    @Test
    void fourWebinarsCrossTheThresholdAtTheFourth() throws IOException {
        String a = "ana@acme.io";
        for (int i = 0; i < 3; i++) {
            send(a, event("w" + i, a, T0 + i * DAY, "web", "webinar_attended"));
            assertTrue(out.isEmpty(), "30 points x" + (i + 1) + " is below 100");
        }
        send(a, event("w3", a, T0 + 3 * DAY, "web", "webinar_attended"));
        // Daily decay f = 2^(-1/14): 30 (f^3 + f^2 + f + 1).
        double f = pow2(-1.0 / 14);
        double e = 30 * (f * f * f + f * f + f + 1);
        assertEquals(111.5817, Scoring.round4(e), 1e-9, "worked by hand");
        List<KeyValue<String, String>> rows = drain();
        assertEquals(List.of(KeyValue.pair(a, json(a, T0 + 3 * DAY, "w3", 111.5817))), rows);

        // One MQL per lead: more engagement emits nothing.
        send(a, event("w4", a, T0 + 4 * DAY, "web", "webinar_attended"));
        assertTrue(out.isEmpty());
    }

    @Test
    void oneHalfLifeHalvesTheScore() throws IOException {
        String b = "bo@acme.io";
        for (int i = 0; i < 3; i++) {
            send(b, event("w" + i, b, T0, "web", "webinar_attended")); // 90 at T0
        }
        // 14 days later: 90 -> 45, + 2 (email open) = 47; + 30 = 77; + 30 = 107 >= 100.
        send(b, event("o", b, T0 + 14 * DAY, "email", "open"));
        send(b, event("w3", b, T0 + 14 * DAY, "web", "webinar_attended"));
        assertTrue(out.isEmpty(), "77 < 100: without decay it would be 122");
        send(b, event("w4", b, T0 + 14 * DAY, "web", "webinar_attended"));
        assertEquals(List.of(KeyValue.pair(b, json(b, T0 + 14 * DAY, "w4", 107.0))), drain());

        KeyValueStore<String, byte[]> store = driver.getKeyValueStore(MqlProcessor.STORE);
        Scoring s = new Scoring();
        LeadState st = s.newState();
        st.decode(store.get(b));
        assertEquals(107.0, st.e, 1e-9);
        assertEquals(53.5, s.engagementAt(st, T0 + 28 * DAY), 1e-9, "and halves again");
    }

    @Test
    void pricingPageCooldownBlocksASecondHitWithinOneDay() throws IOException {
        // Both leads: pricing (15 + any_page 1) at T0; at T0+23h two webinars, a click, an open.
        // Then A views pricing at T0+23h (inside the 1d cooldown: only any_page's 1 point),
        // B at T0+24h (cooldown over: 15 + 1).
        for (String lead : List.of("a@x.io", "b@x.io")) {
            send(lead, event(lead + "p1", lead, T0, "web", "page_view", "url", "https://x.io/pricing"));
            send(lead, event(lead + "w1", lead, T0 + 23 * HOUR, "web", "webinar_attended"));
            send(lead, event(lead + "w2", lead, T0 + 23 * HOUR, "web", "webinar_attended"));
            send(lead, event(lead + "c", lead, T0 + 23 * HOUR, "email", "click"));
            send(lead, event(lead + "o", lead, T0 + 23 * HOUR, "email", "open"));
        }
        double at23h = 16 * pow2(-23.0 / (14 * 24)) + 30 + 30 + 8 + 2; // 85.26
        send("a@x.io", event("a@x.iop2", "a@x.io", T0 + 23 * HOUR, "web", "page_view", "url", "https://x.io/pricing/ent"));
        assertTrue(out.isEmpty(), "blocked: " + (at23h + 1) + " < 100");
        send("b@x.io", event("b@x.iop2", "b@x.io", T0 + 24 * HOUR, "web", "page_view", "url", "https://x.io/pricing/ent"));
        double b = at23h * pow2(-1.0 / (14 * 24)) + 15 + 1; // 101.08
        assertEquals(101.0829, Scoring.round4(b), 1e-9);
        assertEquals(List.of(KeyValue.pair("b@x.io", json("b@x.io", T0 + 24 * HOUR, "b@x.iop2", 101.0829))), drain());
    }

    @Test
    void ticksAndBadRecordsAreSkippedAndTouchNoState() throws IOException {
        String c = "cy@acme.io";
        send(c, tick(T0));
        send(c, new byte[] {7, 1, 2}); // not an InternalRecord
        send(c, event("", c, T0, "web", "webinar_attended")); // empty event_id: invalid
        KeyValueStore<String, byte[]> store = driver.getKeyValueStore(MqlProcessor.STORE);
        assertEquals(null, store.get(c));
        for (int i = 0; i < 3; i++) {
            send(c, event("w" + i, c, T0, "web", "webinar_attended"));
            send(c, tick(T0 + 100 * DAY)); // a tick far ahead does not decay anything
        }
        send(c, event("w3", c, T0, "web", "webinar_attended"));
        assertEquals(List.of(KeyValue.pair(c, json(c, T0, "w3", 120.0))), drain());
    }

    @Test
    void aDuplicateEventIdIsIgnored() throws IOException {
        String d = "di@acme.io";
        for (String id : List.of("w0", "w1", "w2", "w0")) {
            send(d, event(id, d, T0, "web", "webinar_attended"));
        }
        assertTrue(out.isEmpty(), "the repeated w0 adds nothing: 90");
        send(d, event("w3", d, T0, "web", "webinar_attended"));
        assertEquals(List.of(KeyValue.pair(d, json(d, T0, "w3", 120.0))), drain());
    }

    @Test
    void lateEventsDecayAsIfInOrderAndNeverQualifyBeforeCreation() throws IOException {
        String e = "ed@acme.io";
        // Created at T0+14d with 90; a webinar from T0 (before creation) adds 30 x 1/2 = 15 -> 105,
        // but it happened before the lead entered `new`: no MQL on it.
        for (int i = 0; i < 3; i++) {
            send(e, event("w" + i, e, T0 + 14 * DAY, "web", "webinar_attended"));
        }
        send(e, event("late", e, T0, "web", "webinar_attended"));
        assertTrue(out.isEmpty());
        // The next event (an open: +2, same time) qualifies at 107.
        send(e, event("o", e, T0 + 14 * DAY, "email", "open"));
        assertEquals(List.of(KeyValue.pair(e, json(e, T0 + 14 * DAY, "o", 107.0))), drain());
    }

    @Test
    void competitorFormsSubtractAndTheScoreIsClamped() throws IOException {
        String f = "f@rivalco.com";
        send(f, event("x1", f, T0, "web", "form_submit", "email", "f@rivalco.com"));
        send(f, event("x2", f, T0, "web", "form_submit", "email", "f@othervendor.com"));
        // -100, then -200 clamped to -100; 7 webinars: -100 + 210 = 110.
        for (int i = 0; i < 6; i++) {
            send(f, event("w" + i, f, T0, "web", "webinar_attended"));
        }
        assertTrue(out.isEmpty(), "80 < 100 (without the clamp: -20)");
        send(f, event("w6", f, T0, "web", "webinar_attended"));
        assertEquals(List.of(KeyValue.pair(f, json(f, T0, "w6", 110.0))), drain());
    }
}
