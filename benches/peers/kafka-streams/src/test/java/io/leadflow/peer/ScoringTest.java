package io.leadflow.peer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.BufferedReader;
import java.io.StringReader;
import org.junit.jupiter.api.Test;

/** The pure class, without Kafka. */
class ScoringTest {
    static final long T0 = 1_793_491_200_000L;
    static final long DAY = 86_400_000L;

    final Scoring s = new Scoring();

    LeadState lead(Event first) {
        LeadState st = s.newState();
        s.load(st, null, first);
        return st;
    }

    @Test
    void matchersFollowSpec() {
        Matcher g = Matcher.parse("glob:*/pricing*");
        assertTrue(g.matches("https://x.io/pricing"));
        assertTrue(g.matches("https://x.io/pricing/enterprise"));
        assertFalse(g.matches("https://x.io/about"));
        Matcher q = Matcher.parse("glob:U?");
        assertTrue(q.matches("US"));
        assertFalse(q.matches("U"));
        assertFalse(q.matches("USA"));
        assertTrue(q.matches("U\uD83D\uDE00"), "? is one character (code point)");
        assertTrue(Matcher.parse("glob:a.b(c)+").matches("a.b(c)+"));
        assertFalse(Matcher.parse("glob:a.b(c)+").matches("axb(c)+"));
        assertTrue(Matcher.parse("glob:a*b*c").matches("aXbYbZc"));
        assertThrows(IllegalArgumentException.class, () -> Matcher.parse("glob:U[SK]"));
        Matcher r = Matcher.parse("regex:@(rivalco|othervendor)\\.com$");
        assertTrue(r.matches("ed@rivalco.com"));
        assertFalse(r.matches("ed@rivalco.com.au"));
        assertFalse(r.matches("ed@rivalco.com\n"), "$ is the end of the text, as in Rust");
        assertTrue(Matcher.parse("US").matches("US"));
        assertFalse(Matcher.parse("US").matches("us"));
    }

    @Test
    void everyMatchingRuleApplies() {
        Event ev = Event.of("p", "l", T0, Event.WEB, "page_view", "url", "https://x.io/pricing");
        LeadState st = lead(ev);
        s.apply(st, ev);
        assertEquals(16.0, st.e, "pricing_page 15 + any_page 1");
    }

    @Test
    void lateEventDecaysAsIfInOrder() {
        Event a = Event.of("a", "l", T0 + 14 * DAY, Event.WEB, "webinar_attended");
        LeadState st = lead(a);
        s.apply(st, a);
        s.apply(st, Event.of("b", "l", T0 + 7 * DAY, Event.WEB, "webinar_attended"));
        assertEquals(T0 + 14 * DAY, st.tE, "a late event does not move tE back");
        assertEquals(30 + 30 * Math.sqrt(0.5), st.e, 1e-9);
    }

    @Test
    void cooldownIsSymmetricInTimeAndKeepsTheLatest() {
        Event a = Event.of("a", "l", T0, Event.EMAIL, "click");
        LeadState st = lead(a);
        s.apply(st, a); // 8
        s.apply(st, Event.of("b", "l", T0 - 5 * 3_600_000L, Event.EMAIL, "click")); // |dt| 5h < 6h: blocked
        assertEquals(8.0, st.e, 1e-12);
        s.apply(st, Event.of("c", "l", T0 - 6 * 3_600_000L, Event.EMAIL, "click")); // 6h: scores, decayed
        assertEquals(T0, st.cooldownAt[4], "t_last := max(t_last, t)");
        assertEquals(8 + 8 * Math.pow(2, -6.0 / (14 * 24)), st.e, 1e-9);
    }

    @Test
    void keyedCooldownPerAssetAndForgetsTheOldestBeyond64() {
        Event a = Event.of("a", "l", T0, Event.WEB, "content_download", "asset", "wp1");
        LeadState st = lead(a);
        s.apply(st, a);
        s.apply(st, Event.of("b", "l", T0, Event.WEB, "content_download", "asset", "wp1")); // blocked
        s.apply(st, Event.of("c", "l", T0, Event.WEB, "content_download", "asset", "wp2")); // scores
        s.apply(st, Event.of("d", "l", T0, Event.WEB, "content_download")); // "" value: scores
        s.apply(st, Event.of("e", "l", T0, Event.WEB, "content_download", "other", "x")); // "" again: blocked
        assertEquals(75.0, st.e, 1e-12);

        LeadState k = s.newState();
        k.reset(0);
        for (int i = 0; i < 64; i++) {
            assertTrue(k.keyedCooldownAllows(2, "v" + i, 1000 + (i == 5 ? -500 : i), 10));
        }
        assertTrue(k.keyedCooldownAllows(2, "v64", 2000, 10)); // forgets v5 (smallest t_last)
        assertEquals(64, k.keyedLen);
        assertTrue(k.keyedCooldownAllows(2, "v5", 2000, 10 * DAY), "v5 was forgotten");
        assertFalse(k.keyedCooldownAllows(2, "v6", 1006, 10), "v6 is still remembered");
        assertTrue(k.keyedCooldownAllows(2, "v0", 2000, 10 * DAY), "v0 forgotten for v5: the oldest then");
    }

    @Test
    void stateRoundTripsThroughItsBinaryForm() {
        Event a = Event.of("a", "l", T0, Event.WEB, "content_download", "asset", "wp-é");
        LeadState st = lead(a);
        s.apply(st, a);
        for (int i = 0; i < 10; i++) {
            s.apply(st, Event.of("c" + i, "l", T0 + i, Event.EMAIL, "click"));
        }
        s.apply(st, Event.of("p", "l", T0 + 20, Event.WEB, "page_view", "url", "/pricing"));
        byte[] bytes = st.encode();
        LeadState back = s.newState();
        back.decode(bytes);
        assertEquals(st.e, back.e);
        assertEquals(st.tE, back.tE);
        assertEquals(st.created, back.created);
        assertEquals(st.mql, back.mql);
        assertEquals(st.idsLen, back.idsLen);
        assertEquals(st.idsNext, back.idsNext);
        assertEquals(java.util.Arrays.toString(st.ids), java.util.Arrays.toString(back.ids));
        assertEquals(java.util.Arrays.toString(st.cooldownAt), java.util.Arrays.toString(back.cooldownAt));
        assertEquals(1, back.keyedLen);
        assertEquals("wp-é", back.keyedValue[0]);
        assertTrue(java.util.Arrays.equals(bytes, back.encode()));
        assertTrue(s.apply(back, Event.of("c3", "l", T0, Event.EMAIL, "click")) == Scoring.DUPLICATE);
    }

    @Test
    void duplicateWindowIsTheLastEightIds() {
        Event first = Event.of("id0", "l", T0, Event.EMAIL, "delivered");
        LeadState st = lead(first);
        for (int i = 0; i < 9; i++) {
            assertEquals(Scoring.APPLIED, s.apply(st, Event.of("id" + i, "l", T0, Event.EMAIL, "delivered")));
        }
        assertEquals(Scoring.DUPLICATE, s.apply(st, Event.of("id1", "l", T0, Event.EMAIL, "delivered")));
        assertEquals(Scoring.APPLIED, s.apply(st, Event.of("id0", "l", T0, Event.EMAIL, "delivered")), "forgotten");
    }

    @Test
    void fnvMatchesTheReferenceValues() {
        assertEquals(0xcbf29ce484222325L, LeadState.fnv1a(""));
        assertEquals(0xaf63dc4c8601ec8cL, LeadState.fnv1a("a"));
        assertEquals(0x85944171f73967e8L, LeadState.fnv1a("foobar"));
    }

    @Test
    void roundingIsHalfAwayFromZero() {
        assertEquals(1.2346, Scoring.round4(1.23455));
        assertEquals(-1.2346, Scoring.round4(-1.23455));
        assertEquals(0.0, Scoring.round4(2.5e-5));
        assertEquals(0.0001, Scoring.round4(5e-5));
        assertEquals("0.0", Double.toString(Scoring.round4(-0.00001)));
    }

    @Test
    void replayReadsJsonLines() throws Exception {
        String lines = String.join("\n",
                "{\"event_id\":\"1\",\"lead_key\":\"a\",\"occurred_at\":1000,\"source\":\"web\",\"type\":\"webinar_attended\",\"attributes\":{}}",
                "{\"event_id\":\"2\",\"lead_key\":\"a\",\"occurred_at\":1000,\"source\":\"web\",\"type\":\"webinar_attended\",\"extra\":[1,{\"x\":2}]}",
                "{\"event_id\":\"3\",\"lead_key\":\"a\",\"occurred_at\":1000.5,\"source\":\"web\",\"type\":\"webinar_attended\"}",
                "{\"event_id\":\"3\",\"lead_key\":\"a\",\"occurred_at\":1000,\"source\":\"fax\",\"type\":\"webinar_attended\"}",
                "not json",
                "{\"event_id\":\"3\",\"lead_key\":\"a\",\"occurred_at\":1000,\"source\":\"web\",\"type\":\"webinar_attended\"}",
                "{\"event_id\":\"2\",\"lead_key\":\"a\",\"occurred_at\":1000,\"source\":\"web\",\"type\":\"webinar_attended\"}",
                "{\"event_id\":\"4\",\"lead_key\":\"a\",\"occurred_at\":1000,\"source\":\"web\",\"type\":\"webinar_attended\"}",
                "{\"event_id\":\"1\",\"lead_key\":\"b\",\"occurred_at\":1000,\"source\":\"email\",\"type\":\"open\"}");
        StringBuilder got = new StringBuilder();
        Replay.Counts c = Replay.run(new BufferedReader(new StringReader(lines)), got::append);
        assertEquals(6, c.events);
        assertEquals(3, c.invalid);
        assertEquals(1, c.duplicates);
        assertEquals(2, c.leads);
        assertEquals(1, c.mql);
        assertEquals("{\"lead_key\":\"a\",\"from\":\"new\",\"to\":\"mql\",\"at\":1000,\"event_id\":\"4\",\"score\":120.0}", got.toString());
    }
}
