package io.leadflow.peer;

import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;

/**
 * Offline mode: folds a JSON Lines event file (the format {@code leadflow gen} writes) in file
 * order through the same {@link Scoring} and {@link LeadState} encoding as the processor,
 * with a map in place of the state store, and prints the counts. No Kafka.
 *
 * <pre>java -cp leadflow-peer-kafka-streams.jar io.leadflow.peer.Replay FILE.jsonl|-</pre>
 */
public final class Replay {
    private static final JsonFactory JSON = new JsonFactory();

    public static final class Counts {
        public long lines;
        public long events;
        public long duplicates;
        public long invalid;
        public long mql;
        public long leads;
    }

    public static void main(String[] args) throws IOException {
        boolean print = args.length == 2 && args[0].equals("--transitions");
        if (args.length != 1 && !print) {
            System.err.println("usage: java -cp leadflow-peer-kafka-streams.jar io.leadflow.peer.Replay [--transitions] FILE.jsonl|-");
            System.exit(2);
        }
        String file = args[args.length - 1];
        BufferedReader in = file.equals("-")
                ? new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8), 1 << 16)
                : Files.newBufferedReader(Path.of(file), StandardCharsets.UTF_8);
        java.io.PrintStream out = System.out;
        Counts c = run(in, print ? out::println : null);
        // With --transitions the records go to standard output and the counts to standard error.
        java.io.PrintStream summary = print ? System.err : out;
        summary.printf("events: %d (duplicates %d), invalid lines: %d%n", c.events, c.duplicates, c.invalid);
        summary.printf("leads: %d%n", c.leads);
        summary.printf("transitions by stage: mql=%d%n", c.mql);
    }

    /** Folds the lines of {@code in}; each MQL transition's JSON goes to {@code transitions} when it is not null. */
    public static Counts run(BufferedReader in, java.util.function.Consumer<String> transitions) throws IOException {
        Scoring scoring = new Scoring();
        LeadState state = scoring.newState();
        Map<String, byte[]> store = new HashMap<>();
        Event ev = new Event();
        Counts c = new Counts();
        String line;
        while ((line = in.readLine()) != null) {
            c.lines++;
            if (line.isBlank()) {
                continue;
            }
            String invalid;
            try {
                invalid = parse(line, ev);
            } catch (IOException | RuntimeException e) {
                String m = String.valueOf(e.getMessage());
                invalid = "invalid JSON: " + m.lines().findFirst().orElse("");
            }
            if (invalid == null) {
                invalid = ev.invalidReason();
            }
            if (invalid != null) {
                c.invalid++;
                System.err.println("line " + c.lines + ": " + invalid);
                continue;
            }
            c.events++;
            scoring.load(state, store.get(ev.leadKey), ev);
            int r = scoring.apply(state, ev);
            if (r == Scoring.DUPLICATE) {
                c.duplicates++;
                continue;
            }
            store.put(ev.leadKey, state.encode());
            if (r == Scoring.MQL) {
                c.mql++;
                if (transitions != null) {
                    transitions.accept(Scoring.transitionJson(ev.leadKey, ev.occurredAt, ev.eventId,
                            scoring.mqlScore(state, ev.occurredAt)));
                }
            }
        }
        c.leads = store.size();
        return c;
    }

    /** Parses one line into {@code ev}; returns why it is malformed, or null. */
    static String parse(String line, Event ev) throws IOException {
        ev.eventId = null;
        ev.leadKey = null;
        ev.type = null;
        ev.source = -1;
        ev.occurredAt = Long.MIN_VALUE;
        ev.clearAttributes();
        boolean hasTime = false;
        String source = null;
        try (JsonParser p = JSON.createParser(line)) {
            if (p.nextToken() != JsonToken.START_OBJECT) {
                return "expected a JSON object";
            }
            while (p.nextToken() == JsonToken.FIELD_NAME) {
                String name = p.currentName();
                JsonToken v = p.nextToken();
                switch (name) {
                    case "event_id" -> ev.eventId = string(p, v, name);
                    case "lead_key" -> ev.leadKey = string(p, v, name);
                    case "source" -> source = string(p, v, name);
                    case "type" -> ev.type = string(p, v, name);
                    case "occurred_at" -> {
                        if (v == JsonToken.VALUE_NULL) {
                            break;
                        }
                        if (v != JsonToken.VALUE_NUMBER_INT || p.getNumberType() == JsonParser.NumberType.BIG_INTEGER) {
                            return "occurred_at: expected an integer count of milliseconds";
                        }
                        ev.occurredAt = p.getLongValue();
                        hasTime = true;
                    }
                    case "attributes" -> {
                        if (v == JsonToken.VALUE_NULL) {
                            break;
                        }
                        if (v != JsonToken.START_OBJECT) {
                            return "attributes: expected an object";
                        }
                        while (p.nextToken() == JsonToken.FIELD_NAME) {
                            String k = p.currentName();
                            if (p.nextToken() != JsonToken.VALUE_STRING) {
                                return "attributes." + k + ": expected a string";
                            }
                            ev.addAttribute(k, p.getText());
                        }
                    }
                    default -> p.skipChildren();
                }
            }
            if (p.nextToken() != null) {
                return "trailing characters after the object";
            }
        }
        if (!hasTime) {
            return "missing occurred_at";
        }
        if (source == null) {
            return "missing source";
        }
        ev.source = Event.sourceIndex(source);
        return null;
    }

    private static String string(JsonParser p, JsonToken v, String name) throws IOException {
        if (v == JsonToken.VALUE_NULL) {
            return null;
        }
        if (v != JsonToken.VALUE_STRING) {
            throw new IOException(name + ": expected a string");
        }
        return p.getText();
    }
}
