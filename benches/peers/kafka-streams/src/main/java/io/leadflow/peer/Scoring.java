package io.leadflow.peer;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;

/**
 * The pure core shared by the Kafka Streams processor and the offline replay: one event
 * applied to one lead's state, under SPEC §2 (duplicates), §4 (engagement rules, cooldowns,
 * decay, clamp, late events) and §5 (the MQL step of the funnel). No I/O, no wall clock.
 */
public final class Scoring {
    /** The event's id was among the lead's last {@link PeerConfig#RECENT_IDS}: nothing changed. */
    public static final int DUPLICATE = 0;
    /** The event was applied; no stage change. */
    public static final int APPLIED = 1;
    /** The event was applied and made the lead an MQL (new -> mql). */
    public static final int MQL = 2;

    private final PeerConfig.Rule[] rules;
    /** Per source: type -> indices of the rules for that type or {@code *}, in config order. */
    private final List<Map<String, int[]>> byType = new ArrayList<>();
    /** Per source: the {@code *} rules alone (for a type no rule names). */
    private final int[][] wildcard = new int[3][];
    private final double halfLifeMs;
    private final double min;
    private final double max;
    private final double threshold;

    public Scoring() {
        this(PeerConfig.ENGAGEMENT, PeerConfig.HALF_LIFE_MS, PeerConfig.MIN, PeerConfig.MAX, PeerConfig.MQL_THRESHOLD);
    }

    /** {@code halfLifeMs <= 0}: no decay; NaN bounds: unbounded. */
    public Scoring(List<PeerConfig.Rule> engagement, double halfLifeMs, double min, double max, double threshold) {
        this.rules = engagement.toArray(new PeerConfig.Rule[0]);
        this.halfLifeMs = halfLifeMs;
        this.min = min;
        this.max = max;
        this.threshold = threshold;
        for (int src = 0; src < 3; src++) {
            Map<String, int[]> m = new HashMap<>();
            List<Integer> any = new ArrayList<>();
            for (int i = 0; i < rules.length; i++) {
                if (rules[i].source() == src && rules[i].anyType()) {
                    any.add(i);
                }
            }
            for (PeerConfig.Rule r : rules) {
                if (r.source() != src || r.anyType() || m.containsKey(r.type())) {
                    continue;
                }
                List<Integer> list = new ArrayList<>();
                for (int i = 0; i < rules.length; i++) {
                    PeerConfig.Rule x = rules[i];
                    if (x.source() == src && (x.anyType() || x.type().equals(r.type()))) {
                        list.add(i);
                    }
                }
                m.put(r.type(), list.stream().mapToInt(Integer::intValue).toArray());
            }
            byType.add(m);
            wildcard[src] = any.stream().mapToInt(Integer::intValue).toArray();
        }
    }

    public int ruleCount() {
        return rules.length;
    }

    /** A state object sized for these rules. */
    public LeadState newState() {
        return new LeadState(rules.length);
    }

    /** Loads a lead's stored state into {@code s}, or creates the lead (stage new, engagement 0 as of the event's time: SPEC §3) when there is none. */
    public void load(LeadState s, byte[] stored, Event ev) {
        if (stored == null) {
            s.reset(ev.occurredAt);
        } else {
            s.decode(stored);
        }
    }

    /**
     * Applies {@code ev} to {@code s} (a lead created by an earlier event, or just now with
     * {@link LeadState#reset(long)} at the event's time). Returns {@link #DUPLICATE},
     * {@link #APPLIED} or {@link #MQL}.
     */
    public int apply(LeadState s, Event ev) {
        long t = ev.occurredAt;
        long h = LeadState.fnv1a(ev.eventId);
        if (s.seenId(h)) {
            return DUPLICATE;
        }
        s.pushId(h);
        score(s, ev);
        // SPEC §5: after each applied event other than a CRM stage event, a `new` lead whose
        // engagement at T = max(t, tE) reaches the threshold becomes an MQL; fit is 0 and
        // mql_min_fit is 0, so the fit gate always passes. An event older than the lead's
        // creation (when it entered `new`) never moves it. Decay alone never moves a stage.
        if (!s.mql && t >= s.created && !isCrmStageEvent(ev)) {
            long now = Math.max(t, s.tE);
            if (engagementAt(s, now) >= threshold) {
                s.mql = true;
                return MQL;
            }
        }
        return APPLIED;
    }

    /** Every rule whose source, type, {@code where} and cooldown allow it scores, in config order (SPEC §4). */
    private void score(LeadState s, Event ev) {
        if (ev.source < 0 || ev.source > 2) {
            return;
        }
        int[] candidates = byType.get(ev.source).get(ev.type);
        if (candidates == null) {
            candidates = wildcard[ev.source];
        }
        long t = ev.occurredAt;
        for (int ri : candidates) {
            PeerConfig.Rule rule = rules[ri];
            if (!rule.conditionsHold(ev)) {
                continue;
            }
            if (rule.hasCooldown()) {
                long window = rule.cooldownMs();
                if (rule.cooldownKey() == null) {
                    long last = s.cooldownAt[ri];
                    if (last != Long.MIN_VALUE) {
                        if (Math.abs(t - last) < window) {
                            continue;
                        }
                        s.cooldownAt[ri] = Math.max(last, t);
                    } else {
                        s.cooldownAt[ri] = t;
                    }
                } else {
                    String value = ev.attribute(rule.cooldownKey());
                    if (!s.keyedCooldownAllows(ri, value == null ? "" : value, t, window)) {
                        continue;
                    }
                }
            }
            add(s, rule.points(), t);
        }
    }

    /** Adds {@code p} at event time {@code t}: a late event decays as if it had come in order; then clamp. */
    private void add(LeadState s, double p, long t) {
        if (halfLifeMs <= 0) {
            s.e += p;
            s.tE = Math.max(s.tE, t);
        } else if (t >= s.tE) {
            s.e = s.e * factor(t - s.tE) + p;
            s.tE = t;
        } else {
            s.e += p * factor(s.tE - t);
        }
        if (!Double.isNaN(min)) {
            s.e = Math.max(s.e, min);
        }
        if (!Double.isNaN(max)) {
            s.e = Math.min(s.e, max);
        }
    }

    private double factor(long dtMs) {
        return Math.pow(2.0, -(double) dtMs / halfLifeMs);
    }

    /** The engagement at time {@code t}; a time before tE reads the stored value. */
    public double engagementAt(LeadState s, long t) {
        if (halfLifeMs > 0 && t > s.tE) {
            return s.e * factor(t - s.tE);
        }
        return s.e;
    }

    /** The score an MQL transition reports: the engagement at T = max(t, tE), rounded to 4 decimals (SPEC §1). */
    public double mqlScore(LeadState s, long t) {
        return round4(engagementAt(s, Math.max(t, s.tE)));
    }

    /** The seven CRM events that move stages (SPEC §5 table): they are not followed by an MQL check. */
    static boolean isCrmStageEvent(Event ev) {
        if (ev.source != Event.CRM) {
            return false;
        }
        switch (ev.type) {
            case "sales_accepted", "sales_rejected", "recycled", "opportunity_created",
                 "opportunity_won", "opportunity_lost", "disqualified":
                return true;
            default:
                return false;
        }
    }

    /** Rounds to 4 decimals, half away from zero; never -0.0. */
    public static double round4(double x) {
        double y = Math.abs(x * 10_000.0);
        double f = Math.floor(y);
        double r = (y - f >= 0.5 ? f + 1 : f) / 10_000.0;
        if (r == 0.0) {
            return 0.0;
        }
        return x < 0 ? -r : r;
    }

    /** The output record's JSON value. */
    public static String transitionJson(String leadKey, long at, String eventId, double score) {
        StringBuilder b = new StringBuilder(96 + leadKey.length() + eventId.length());
        b.append("{\"lead_key\":");
        jsonString(b, leadKey);
        b.append(",\"from\":\"new\",\"to\":\"mql\",\"at\":").append(at).append(",\"event_id\":");
        jsonString(b, eventId);
        b.append(",\"score\":").append(score).append('}');
        return b.toString();
    }

    static void jsonString(StringBuilder b, String s) {
        b.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> b.append("\\\"");
                case '\\' -> b.append("\\\\");
                case '\n' -> b.append("\\n");
                case '\r' -> b.append("\\r");
                case '\t' -> b.append("\\t");
                default -> {
                    if (c < 0x20) {
                        b.append(String.format("\\u%04x", (int) c));
                    } else {
                        b.append(c);
                    }
                }
            }
        }
        b.append('"');
    }
}
