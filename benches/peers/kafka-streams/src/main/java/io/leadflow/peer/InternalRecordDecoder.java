package io.leadflow.peer;

import java.io.IOException;
import org.apache.avro.io.BinaryDecoder;
import org.apache.avro.io.DecoderFactory;

/**
 * Decodes one internal-topic value: plain Avro binary of {@code schemas/internal_record.avsc}
 * ({@code InternalRecord{body: union{Event, Tick}}}), no framing. Reads the fields in schema
 * order with Avro's {@link BinaryDecoder} (reused across records) straight into a reusable
 * {@link Event}, without a generic or specific record in between.
 */
public final class InternalRecordDecoder {
    private BinaryDecoder decoder;

    /**
     * Decodes {@code value} into {@code ev}. Returns true for an Event, false for a Tick.
     *
     * @throws IOException when the bytes are not an InternalRecord
     */
    public boolean decode(byte[] value, Event ev) throws IOException {
        if (value == null) {
            throw new IOException("no value");
        }
        decoder = DecoderFactory.get().binaryDecoder(value, decoder);
        int branch = decoder.readIndex();
        if (branch == 1) {
            decoder.readLong(); // Tick.time: the stream clock; this job has no timers
            return false;
        }
        if (branch != 0) {
            throw new IOException("union branch " + branch + " is neither Event nor Tick");
        }
        ev.eventId = decoder.readString();
        ev.leadKey = decoder.readString();
        ev.occurredAt = decoder.readLong();
        ev.source = decoder.readEnum();
        if (ev.source < 0 || ev.source > 2) {
            throw new IOException("source symbol " + ev.source + " out of range");
        }
        ev.type = decoder.readString();
        ev.clearAttributes();
        for (long n = decoder.readMapStart(); n != 0; n = decoder.mapNext()) {
            for (long i = 0; i < n; i++) {
                String k = decoder.readString();
                ev.addAttribute(k, decoder.readString());
            }
        }
        if (!decoder.isEnd()) {
            throw new IOException("trailing bytes after the record");
        }
        return true;
    }
}
