package io.leadflow.peer;

/**
 * One logical event (SPEC §2), mutable so that a decoder can reuse one instance per record.
 * Attributes are kept as two parallel arrays: events carry a handful of them.
 */
public final class Event {
    public static final int WEB = 0;
    public static final int EMAIL = 1;
    public static final int CRM = 2;
    private static final String[] SOURCE_NAMES = {"web", "email", "crm"};

    public String eventId;
    public String leadKey;
    public long occurredAt;
    /** {@link #WEB}, {@link #EMAIL} or {@link #CRM} (the Avro enum's index). */
    public int source;
    public String type;

    private String[] attrKeys = new String[4];
    private String[] attrValues = new String[4];
    private int attrCount;

    public static int sourceIndex(String name) {
        for (int i = 0; i < SOURCE_NAMES.length; i++) {
            if (SOURCE_NAMES[i].equals(name)) {
                return i;
            }
        }
        return -1;
    }

    public static String sourceName(int index) {
        return SOURCE_NAMES[index];
    }

    public void clearAttributes() {
        for (int i = 0; i < attrCount; i++) {
            attrKeys[i] = null;
            attrValues[i] = null;
        }
        attrCount = 0;
    }

    public void addAttribute(String key, String value) {
        if (attrCount == attrKeys.length) {
            attrKeys = java.util.Arrays.copyOf(attrKeys, attrCount * 2);
            attrValues = java.util.Arrays.copyOf(attrValues, attrCount * 2);
        }
        attrKeys[attrCount] = key;
        attrValues[attrCount] = value;
        attrCount++;
    }

    /** The attribute's value, or null when absent. A repeated name: the last one wins (as in a JSON object or Avro map). */
    public String attribute(String name) {
        for (int i = attrCount - 1; i >= 0; i--) {
            if (attrKeys[i].equals(name)) {
                return attrValues[i];
            }
        }
        return null;
    }

    public int attributeCount() {
        return attrCount;
    }

    public String attributeKey(int i) {
        return attrKeys[i];
    }

    public String attributeValue(int i) {
        return attrValues[i];
    }

    /** Why the event is invalid under SPEC §2, or null when it is valid. */
    public String invalidReason() {
        if (eventId == null || eventId.isEmpty()) {
            return eventId == null ? "missing event_id" : "empty event_id";
        }
        if (leadKey == null || leadKey.isEmpty()) {
            return leadKey == null ? "missing lead_key" : "empty lead_key";
        }
        if (utf8Length(leadKey) > 256) {
            return "lead_key over 256 bytes";
        }
        if (occurredAt < 0) {
            return "negative occurred_at";
        }
        if (source < 0 || source > 2) {
            return "unknown source";
        }
        if (type == null || type.isEmpty()) {
            return type == null ? "missing type" : "empty type";
        }
        if (source == CRM && !CRM_TYPES.contains(type)) {
            return "unknown crm type " + type;
        }
        return null;
    }

    private static final java.util.Set<String> CRM_TYPES = java.util.Set.of(
            "lead_upsert", "owner_assigned", "sales_accepted", "sales_rejected", "sales_activity",
            "recycled", "disqualified", "opportunity_created", "opportunity_won", "opportunity_lost");

    static int utf8Length(String s) {
        int n = 0;
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            if (c < 0x80) {
                n += 1;
            } else if (c < 0x800) {
                n += 2;
            } else if (Character.isHighSurrogate(c) && i + 1 < s.length() && Character.isLowSurrogate(s.charAt(i + 1))) {
                n += 4;
                i++;
            } else {
                n += 3;
            }
        }
        return n;
    }

    /** A fresh event (tests and tools). */
    public static Event of(String eventId, String leadKey, long occurredAt, int source, String type, String... attrs) {
        Event e = new Event();
        e.eventId = eventId;
        e.leadKey = leadKey;
        e.occurredAt = occurredAt;
        e.source = source;
        e.type = type;
        for (int i = 0; i + 1 < attrs.length; i += 2) {
            e.addAttribute(attrs[i], attrs[i + 1]);
        }
        return e;
    }
}
