package io.leadflow.peer;

import java.util.List;

/**
 * The scoring and funnel settings of {@code benches/peers/config.toml}, written out as code
 * (a Kafka Streams team would keep its rules in its own code or config; ConfigMirrorTest checks
 * this class against the TOML file, so the two cannot drift apart silently).
 */
public final class PeerConfig {
    private PeerConfig() {}

    public static final long MINUTE = 60_000L;
    public static final long HOUR = 60 * MINUTE;
    public static final long DAY = 24 * HOUR;

    /** {@code scoring.half_life = "14d"}. */
    public static final double HALF_LIFE_MS = 14 * DAY;
    /** {@code scoring.min}, {@code scoring.max}. */
    public static final double MIN = -100.0;
    public static final double MAX = 400.0;
    /** {@code funnel.mql_threshold}; {@code mql_min_fit = 0} with no fit rules: fit (0) always passes. */
    public static final double MQL_THRESHOLD = 100.0;
    /** {@code dedupe.recent_ids} (the default, 8). */
    public static final int RECENT_IDS = 8;
    /** At most this many {@code cooldown_key} values per rule and lead (SPEC §4). */
    public static final int MAX_COOLDOWN_KEYS = 64;

    /** An engagement rule ({@code [[scoring.engagement]]}). */
    public record Rule(String name, int source, String type, List<Condition> where, double points,
                       long cooldownMs, String cooldownKey) {
        /** {@code type = "*"} is stored as null. */
        public boolean anyType() {
            return type == null;
        }

        public boolean hasCooldown() {
            return cooldownMs >= 0;
        }

        public boolean conditionsHold(Event ev) {
            for (Condition c : where) {
                String v = ev.attribute(c.attribute());
                if (v == null || !c.matcher().matches(v)) {
                    return false; // a missing attribute does not match
                }
            }
            return true;
        }
    }

    public record Condition(String attribute, String text, Matcher matcher) {
        static Condition of(String attribute, String text) {
            return new Condition(attribute, text, Matcher.parse(text));
        }
    }

    private static Rule rule(String name, int source, String type, double points) {
        return new Rule(name, source, type, List.of(), points, -1, null);
    }

    /** The eight engagement rules, in config order (the order in which they apply). */
    public static final List<Rule> ENGAGEMENT = List.of(
            new Rule("pricing_page", Event.WEB, "page_view",
                    List.of(Condition.of("url", "glob:*/pricing*")), 15, DAY, null),
            rule("any_page", Event.WEB, "page_view", 1),
            new Rule("whitepaper", Event.WEB, "content_download", List.of(), 25, 30 * DAY, "asset"),
            rule("webinar", Event.WEB, "webinar_attended", 30),
            new Rule("email_click", Event.EMAIL, "click", List.of(), 8, 6 * HOUR, null),
            rule("email_open", Event.EMAIL, "open", 2),
            rule("unsubscribe", Event.EMAIL, "unsubscribe", -40),
            new Rule("competitor_form", Event.WEB, "form_submit",
                    List.of(Condition.of("email", "regex:@(rivalco|othervendor)\\.com$")), -100, -1, null));
}
