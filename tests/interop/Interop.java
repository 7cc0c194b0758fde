// A Kafka client independent of leadflow: Apache Kafka's Java client and Apache Avro's Java
// library, run as a single source file (java -cp CLASSPATH Interop.java ...) by
// tests/it/interop.rs.
//
//   produce BOOTSTRAP SCHEMA_DIR     reads JSON lines {"topic", "format": "avro" or
//                                    "avro-confluent", "schema": "web_event.avsc", "event": {...}}
//                                    from stdin and produces each event, keyed by lead_key,
//                                    as a plain or Confluent-framed (magic 0, schema id 1) datum
//   consume BOOTSTRAP TOPIC SCHEMA   prints every committed record of TOPIC (read_committed)
//                                    as a JSON line {"partition", "offset", "key", "value"},
//                                    the value decoded with the schema file SCHEMA
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedReader;
import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import org.apache.avro.Schema;
import org.apache.avro.generic.GenericData;
import org.apache.avro.generic.GenericDatumReader;
import org.apache.avro.generic.GenericDatumWriter;
import org.apache.avro.generic.GenericRecord;
import org.apache.avro.io.BinaryEncoder;
import org.apache.avro.io.DecoderFactory;
import org.apache.avro.io.EncoderFactory;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class Interop {
  static final ObjectMapper JSON = new ObjectMapper();

  public static void main(String[] args) throws Exception {
    if (args.length >= 3 && args[0].equals("produce")) {
      produce(args[1], new File(args[2]));
    } else if (args.length >= 4 && args[0].equals("consume")) {
      consume(args[1], args[2], new Schema.Parser().parse(new File(args[3])));
    } else {
      System.err.println("usage: produce BOOTSTRAP SCHEMA_DIR | consume BOOTSTRAP TOPIC SCHEMA");
      System.exit(2);
    }
  }

  static void produce(String bootstrap, File schemaDir) throws Exception {
    Properties props = new Properties();
    props.put("bootstrap.servers", bootstrap);
    props.put("enable.idempotence", "true");
    props.put("acks", "all");
    Map<String, Schema> schemas = new HashMap<>();
    int n = 0;
    try (KafkaProducer<byte[], byte[]> producer =
            new KafkaProducer<>(props, new ByteArraySerializer(), new ByteArraySerializer());
        BufferedReader in =
            new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8))) {
      String line;
      while ((line = in.readLine()) != null) {
        if (line.isBlank()) continue;
        JsonNode msg = JSON.readTree(line);
        String file = msg.get("schema").asText();
        Schema schema = schemas.get(file);
        if (schema == null) {
          schema = new Schema.Parser().parse(new File(schemaDir, file));
          schemas.put(file, schema);
        }
        JsonNode ev = msg.get("event");
        byte[] datum = encode(toRecord(schema, ev), schema);
        byte[] value = datum;
        if (msg.get("format").asText().equals("avro-confluent")) {
          // Confluent wire format: magic byte 0, a 4-byte big-endian schema id, the datum.
          value = new byte[5 + datum.length];
          value[4] = 1;
          System.arraycopy(datum, 0, value, 5, datum.length);
        }
        byte[] key = ev.get("lead_key").asText().getBytes(StandardCharsets.UTF_8);
        producer.send(new ProducerRecord<>(msg.get("topic").asText(), key, value));
        n++;
      }
      producer.flush();
    }
    System.err.println("produced " + n);
  }

  /** The input schema's record for a logical event: typed fields from the attributes of the
   *  same name, every other attribute in `properties`. */
  static GenericRecord toRecord(Schema schema, JsonNode ev) {
    GenericRecord r = new GenericData.Record(schema);
    Map<String, String> properties = new HashMap<>();
    JsonNode attrs = ev.get("attributes");
    if (attrs != null) {
      Iterator<Map.Entry<String, JsonNode>> it = attrs.fields();
      while (it.hasNext()) {
        Map.Entry<String, JsonNode> e = it.next();
        properties.put(e.getKey(), e.getValue().asText());
      }
    }
    for (Schema.Field f : schema.getFields()) {
      String name = f.name();
      switch (name) {
        case "event_id", "lead_key", "type" -> r.put(name, ev.get(name).asText());
        case "occurred_at" -> r.put(name, ev.get(name).asLong());
        case "properties" -> {}
        default -> {
          String v = properties.remove(name);
          boolean isLong = f.schema().getTypes().stream()
              .anyMatch(t -> t.getType() == Schema.Type.LONG);
          r.put(name, v == null ? null : isLong ? (Object) Long.parseLong(v) : v);
        }
      }
    }
    r.put("properties", properties);
    return r;
  }

  static byte[] encode(GenericRecord r, Schema schema) throws Exception {
    ByteArrayOutputStream out = new ByteArrayOutputStream();
    BinaryEncoder enc = EncoderFactory.get().binaryEncoder(out, null);
    new GenericDatumWriter<GenericRecord>(schema).write(r, enc);
    enc.flush();
    return out.toByteArray();
  }

  static void consume(String bootstrap, String topic, Schema schema) throws Exception {
    Properties props = new Properties();
    props.put("bootstrap.servers", bootstrap);
    props.put("isolation.level", "read_committed");
    props.put("enable.auto.commit", "false");
    GenericDatumReader<GenericRecord> reader = new GenericDatumReader<>(schema);
    try (KafkaConsumer<byte[], byte[]> consumer =
        new KafkaConsumer<>(props, new ByteArrayDeserializer(), new ByteArrayDeserializer())) {
      List<TopicPartition> parts = new ArrayList<>();
      consumer.partitionsFor(topic).forEach(p -> parts.add(new TopicPartition(topic, p.partition())));
      consumer.assign(parts);
      consumer.seekToBeginning(parts);
      // For a read_committed consumer the end offsets are the last stable offsets.
      Map<TopicPartition, Long> end = consumer.endOffsets(parts);
      long deadline = System.currentTimeMillis() + 60_000;
      while (parts.stream().anyMatch(tp -> consumer.position(tp) < end.get(tp))) {
        if (System.currentTimeMillis() > deadline) throw new RuntimeException("timed out reading " + topic);
        for (ConsumerRecord<byte[], byte[]> rec : consumer.poll(Duration.ofMillis(200))) {
          GenericRecord value = reader.read(null, DecoderFactory.get().binaryDecoder(rec.value(), null));
          ObjectNode line = JSON.createObjectNode();
          line.put("partition", rec.partition());
          line.put("offset", rec.offset());
          line.put("key", new String(rec.key(), StandardCharsets.UTF_8));
          // GenericData renders a record as JSON (enums and strings quoted, null as null).
          line.set("value", JSON.readTree(GenericData.get().toString(value)));
          System.out.println(JSON.writeValueAsString(line));
        }
      }
    }
  }
}
