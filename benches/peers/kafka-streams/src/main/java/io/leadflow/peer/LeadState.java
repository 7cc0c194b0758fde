package io.leadflow.peer;

import java.nio.charset.StandardCharsets;
import java.util.Arrays;

/**
 * One lead's state and its compact binary form (the value of the {@code leads} store):
 * stage flag, engagement {@code (E, tE)}, creation time, the duplicate window (FNV-1a hashes
 * of the last event ids), and the cooldown timestamps. Mutable and reusable: a processor
 * decodes each record's lead into the same instance.
 *
 * <pre>
 * byte    flags (bit 0: mql)
 * double  E
 * long    tE
 * long    created (the creating event's time: when the lead entered `new`)
 * byte    ids kept, byte next slot, long[ids kept] id hashes
 * byte    n, n x (byte rule, long t_last)                      cooldowns without a key
 * varint  n, n x (byte rule, varint len, UTF-8 value, long t_last)   keyed cooldowns, in the order remembered
 * </pre>
 */
public final class LeadState {
    public boolean mql;
    public double e;
    public long tE;
    public long created;

    final long[] ids = new long[PeerConfig.RECENT_IDS];
    int idsLen;
    int idsNext;

    /** Per rule: the last time it scored (cooldown rules without a key); Long.MIN_VALUE when never. */
    final long[] cooldownAt;

    /** Keyed cooldowns, in the order their values were first remembered. */
    int keyedLen;
    byte[] keyedRule = new byte[0];
    String[] keyedValue = new String[0];
    long[] keyedAt = new long[0];

    private byte[] buf = new byte[128];
    private int pos;

    public LeadState(int rules) {
        cooldownAt = new long[rules];
        Arrays.fill(cooldownAt, Long.MIN_VALUE);
    }

    /** A new lead, created by an event at {@code t}: stage new, engagement 0 as of t. */
    public void reset(long t) {
        mql = false;
        e = 0.0;
        tE = t;
        created = t;
        idsLen = 0;
        idsNext = 0;
        Arrays.fill(cooldownAt, Long.MIN_VALUE);
        for (int i = 0; i < keyedLen; i++) {
            keyedValue[i] = null;
        }
        keyedLen = 0;
    }

    // ---- duplicate window (SPEC §2) ----

    boolean seenId(long h) {
        for (int i = 0; i < idsLen; i++) {
            if (ids[i] == h) {
                return true;
            }
        }
        return false;
    }

    void pushId(long h) {
        ids[idsNext] = h;
        idsNext = (idsNext + 1) % ids.length;
        idsLen = Math.min(idsLen + 1, ids.length);
    }

    /** FNV-1a, 64 bit, over the UTF-8 bytes of {@code s} (leadflow hashes event ids the same way). */
    static long fnv1a(String s) {
        long h = 0xcbf29ce484222325L;
        final long prime = 0x100000001b3L;
        for (int i = 0; i < s.length(); i++) {
            int c = s.charAt(i);
            if (c < 0x80) {
                h = (h ^ c) * prime;
            } else if (c < 0x800) {
                h = (h ^ (0xc0 | (c >> 6))) * prime;
                h = (h ^ (0x80 | (c & 0x3f))) * prime;
            } else if (Character.isHighSurrogate((char) c) && i + 1 < s.length()
                    && Character.isLowSurrogate(s.charAt(i + 1))) {
                int cp = Character.toCodePoint((char) c, s.charAt(++i));
                h = (h ^ (0xf0 | (cp >> 18))) * prime;
                h = (h ^ (0x80 | ((cp >> 12) & 0x3f))) * prime;
                h = (h ^ (0x80 | ((cp >> 6) & 0x3f))) * prime;
                h = (h ^ (0x80 | (cp & 0x3f))) * prime;
            } else {
                if (Character.isSurrogate((char) c)) {
                    h = (h ^ '?') * prime; // a lone surrogate: '?', as String.getBytes(UTF_8) writes it
                    continue;
                }
                h = (h ^ (0xe0 | (c >> 12))) * prime;
                h = (h ^ (0x80 | ((c >> 6) & 0x3f))) * prime;
                h = (h ^ (0x80 | (c & 0x3f))) * prime;
            }
        }
        return h;
    }

    // ---- keyed cooldowns (SPEC §4, cooldown_key) ----

    /** Whether rule {@code rule}'s cooldown for {@code value} lets it score at {@code t}; remembers t when it does. */
    boolean keyedCooldownAllows(int rule, String value, long t, long window) {
        int count = 0;
        for (int i = 0; i < keyedLen; i++) {
            if (keyedRule[i] == rule) {
                if (keyedValue[i].equals(value)) {
                    if (Math.abs(t - keyedAt[i]) < window) {
                        return false;
                    }
                    keyedAt[i] = Math.max(keyedAt[i], t);
                    return true;
                }
                count++;
            }
        }
        if (count >= PeerConfig.MAX_COOLDOWN_KEYS) {
            // Forget the value with the smallest t_last (ties: the one remembered first).
            int oldest = -1;
            for (int i = 0; i < keyedLen; i++) {
                if (keyedRule[i] == rule && (oldest < 0 || keyedAt[i] < keyedAt[oldest])) {
                    oldest = i;
                }
            }
            removeKeyed(oldest);
        }
        addKeyed(rule, value, t);
        return true;
    }

    private void removeKeyed(int i) {
        int tail = keyedLen - i - 1;
        System.arraycopy(keyedRule, i + 1, keyedRule, i, tail);
        System.arraycopy(keyedValue, i + 1, keyedValue, i, tail);
        System.arraycopy(keyedAt, i + 1, keyedAt, i, tail);
        keyedLen--;
        keyedValue[keyedLen] = null;
    }

    private void addKeyed(int rule, String value, long t) {
        if (keyedLen == keyedRule.length) {
            int n = Math.max(4, keyedLen * 2);
            keyedRule = Arrays.copyOf(keyedRule, n);
            keyedValue = Arrays.copyOf(keyedValue, n);
            keyedAt = Arrays.copyOf(keyedAt, n);
        }
        keyedRule[keyedLen] = (byte) rule;
        keyedValue[keyedLen] = value;
        keyedAt[keyedLen] = t;
        keyedLen++;
    }

    // ---- binary form ----

    /** The state as a new byte array (the store keeps a reference to it). */
    public byte[] encode() {
        pos = 0;
        ensure(1 + 8 * 3 + 2 + 8 * idsLen + 1 + 9 * cooldownAt.length + 5);
        buf[pos++] = (byte) (mql ? 1 : 0);
        putLong(Double.doubleToRawLongBits(e));
        putLong(tE);
        putLong(created);
        buf[pos++] = (byte) idsLen;
        buf[pos++] = (byte) idsNext;
        for (int i = 0; i < idsLen; i++) {
            putLong(ids[i]);
        }
        int countAt = pos++;
        int n = 0;
        for (int r = 0; r < cooldownAt.length; r++) {
            if (cooldownAt[r] != Long.MIN_VALUE) {
                buf[pos++] = (byte) r;
                putLong(cooldownAt[r]);
                n++;
            }
        }
        buf[countAt] = (byte) n;
        putVarint(keyedLen);
        for (int i = 0; i < keyedLen; i++) {
            byte[] v = keyedValue[i].getBytes(StandardCharsets.UTF_8);
            ensure(1 + 5 + v.length + 8);
            buf[pos++] = keyedRule[i];
            putVarint(v.length);
            System.arraycopy(v, 0, buf, pos, v.length);
            pos += v.length;
            putLong(keyedAt[i]);
        }
        return Arrays.copyOf(buf, pos);
    }

    /** Replaces this state by the one encoded in {@code b}. */
    public void decode(byte[] b) {
        reset(0);
        int p = 0;
        mql = (b[p++] & 1) != 0;
        e = Double.longBitsToDouble(getLong(b, p));
        p += 8;
        tE = getLong(b, p);
        p += 8;
        created = getLong(b, p);
        p += 8;
        idsLen = b[p++];
        idsNext = b[p++];
        for (int i = 0; i < idsLen; i++, p += 8) {
            ids[i] = getLong(b, p);
        }
        int n = b[p++];
        for (int i = 0; i < n; i++) {
            int r = b[p++];
            cooldownAt[r] = getLong(b, p);
            p += 8;
        }
        int[] cursor = {p};
        int keyed = getVarint(b, cursor);
        p = cursor[0];
        for (int i = 0; i < keyed; i++) {
            int r = b[p++];
            cursor[0] = p;
            int len = getVarint(b, cursor);
            p = cursor[0];
            String v = new String(b, p, len, StandardCharsets.UTF_8);
            p += len;
            addKeyed(r, v, getLong(b, p));
            p += 8;
        }
    }

    private void ensure(int more) {
        if (pos + more > buf.length) {
            buf = Arrays.copyOf(buf, Math.max(buf.length * 2, pos + more));
        }
    }

    private void putLong(long v) {
        for (int s = 56; s >= 0; s -= 8) {
            buf[pos++] = (byte) (v >>> s);
        }
    }

    private void putVarint(int v) {
        while ((v & ~0x7f) != 0) {
            buf[pos++] = (byte) ((v & 0x7f) | 0x80);
            v >>>= 7;
        }
        buf[pos++] = (byte) v;
    }

    private static long getLong(byte[] b, int p) {
        long v = 0;
        for (int i = 0; i < 8; i++) {
            v = (v << 8) | (b[p + i] & 0xffL);
        }
        return v;
    }

    private static int getVarint(byte[] b, int[] cursor) {
        int p = cursor[0];
        int v = 0;
        int shift = 0;
        while (true) {
            int x = b[p++];
            v |= (x & 0x7f) << shift;
            if ((x & 0x80) == 0) {
                break;
            }
            shift += 7;
        }
        cursor[0] = p;
        return v;
    }
}
