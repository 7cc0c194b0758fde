package io.leadflow.peer;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/**
 * PeerConfig must say what benches/peers/config.toml says. A small reader for the subset of
 * TOML that file uses (sections, [[arrays of tables]], key = "string" | number | { k = "v" }).
 */
class ConfigMirrorTest {
    static final Pattern KV = Pattern.compile("^([A-Za-z_]+)\\s*=\\s*(.+?)\\s*(#.*)?$");

    @Test
    void peerConfigMirrorsTheToml() throws IOException {
        List<String> lines = Files.readAllLines(Path.of("../config.toml"));
        Map<String, String> scalars = new LinkedHashMap<>();
        List<Map<String, String>> rules = new ArrayList<>();
        String section = "";
        Map<String, String> current = null;
        for (String raw : lines) {
            String line = raw.strip();
            if (line.isEmpty() || line.startsWith("#")) {
                continue;
            }
            if (line.equals("[[scoring.engagement]]")) {
                current = new LinkedHashMap<>();
                rules.add(current);
                section = "rule";
                continue;
            }
            if (line.startsWith("[")) {
                section = line.replaceAll("[\\[\\]]", "");
                current = null;
                continue;
            }
            Matcher m = KV.matcher(line);
            if (!m.matches()) {
                throw new AssertionError("unexpected line in config.toml: " + raw);
            }
            String value = m.group(2);
            if (value.startsWith("\"") && value.endsWith("\"")) {
                value = unquote(value);
            }
            if (current != null) {
                current.put(m.group(1), value);
            } else {
                scalars.put(section + "." + m.group(1), value);
            }
        }
        assertEquals(PeerConfig.HALF_LIFE_MS, ms(scalars.get("scoring.half_life")));
        assertEquals(PeerConfig.MIN, Double.parseDouble(scalars.get("scoring.min")));
        assertEquals(PeerConfig.MAX, Double.parseDouble(scalars.get("scoring.max")));
        assertEquals(PeerConfig.MQL_THRESHOLD, Double.parseDouble(scalars.get("funnel.mql_threshold")));
        assertEquals(0.0, Double.parseDouble(scalars.get("funnel.mql_min_fit")));
        assertEquals(List.of("scoring.half_life", "scoring.min", "scoring.max", "funnel.mql_threshold", "funnel.mql_min_fit"),
                new ArrayList<>(scalars.keySet()), "no other settings (fit rules, fast tracks, SLA, dedupe...)");

        assertEquals(PeerConfig.ENGAGEMENT.size(), rules.size());
        for (int i = 0; i < rules.size(); i++) {
            Map<String, String> r = rules.get(i);
            PeerConfig.Rule p = PeerConfig.ENGAGEMENT.get(i);
            String at = "rule " + i + " " + r.get("name");
            assertEquals(r.get("name"), p.name(), at);
            assertEquals(r.get("source"), Event.sourceName(p.source()), at);
            assertEquals(r.get("type"), p.anyType() ? "*" : p.type(), at);
            assertEquals(Double.parseDouble(r.get("points")), p.points(), at);
            assertEquals(r.containsKey("cooldown") ? (long) ms(r.get("cooldown")) : -1L, p.cooldownMs(), at);
            assertEquals(r.get("cooldown_key"), p.cooldownKey(), at);
            StringBuilder where = new StringBuilder();
            for (PeerConfig.Condition c : p.where()) {
                where.append(c.attribute()).append('=').append(c.text()).append(';');
            }
            String w = r.get("where");
            String expected = "";
            if (w != null) {
                Matcher wm = Pattern.compile("([A-Za-z_]+)\\s*=\\s*(\"(?:[^\"\\\\]|\\\\.)*\")").matcher(w);
                StringBuilder b = new StringBuilder();
                while (wm.find()) {
                    b.append(wm.group(1)).append('=').append(unquote(wm.group(2))).append(';');
                }
                expected = b.toString();
            }
            assertEquals(expected, where.toString(), at);
            for (String k : r.keySet()) {
                if (!List.of("name", "source", "type", "points", "cooldown", "cooldown_key", "where").contains(k)) {
                    throw new AssertionError(at + ": unknown key " + k);
                }
            }
        }
    }

    static String unquote(String q) {
        String s = q.substring(1, q.length() - 1);
        StringBuilder b = new StringBuilder();
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c == '\\' && i + 1 < s.length()) {
                char n = s.charAt(++i);
                b.append(switch (n) {
                    case 'n' -> '\n';
                    case 't' -> '\t';
                    default -> n;
                });
            } else {
                b.append(c);
            }
        }
        return b.toString();
    }

    static double ms(String humantime) {
        Matcher m = Pattern.compile("^(\\d+)(ms|s|m|h|d)$").matcher(humantime);
        if (!m.matches()) {
            throw new AssertionError("duration " + humantime);
        }
        long n = Long.parseLong(m.group(1));
        return n * switch (m.group(2)) {
            case "ms" -> 1L;
            case "s" -> 1_000L;
            case "m" -> 60_000L;
            case "h" -> 3_600_000L;
            default -> 86_400_000L;
        };
    }
}
