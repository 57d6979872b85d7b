package engagement.example;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Publishes user events to the engine's input topic, the way docs/CONTRACTS.md asks.
 *
 * <pre>
 * java -jar target/engagement-producer.jar --broker localhost:9092 --input events.jsonl
 * java -jar target/engagement-producer.jar --broker localhost:9092 --sample-users 20000
 * </pre>
 *
 * <p>Key = user id (UTF-8) and no partitioner set: kafka-clients' default partitioner hashes
 * a record's key with murmur2 ({@code Utils.toPositive(Utils.murmur2(key)) % partitions}), the
 * engine's partition rule. {@code --input} reads JSON Lines of contract events (each with its
 * own stable {@code event_id}) and sends each line unchanged. Connection settings come from the
 * worker's own {@code ENGAGEMENT_*} variables (broker, topic, TLS, SASL), and {@code
 * --command-config FILE} adds any other client property. Prints {@code {"sent": N, "seconds":
 * S, "events_per_s": R}} once every record is acknowledged.
 */
public final class Producer {
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final long HOUR_MS = 3_600_000L;

  private Producer() {}

  public static void main(String[] argv) throws Exception {
    // Before the first logger exists: the client's INFO lines (its whole config) are noise here.
    System.setProperty("org.slf4j.simpleLogger.defaultLogLevel", "warn");
    Args args = Args.parse(argv, System.getenv());
    Properties props = clientProperties(args, System.getenv());
    long started = System.nanoTime();
    long sent;
    try (KafkaProducer<String, byte[]> producer = new KafkaProducer<>(props)) {
      Sender sender = new Sender(producer, args.topic);
      if (args.input != null) {
        sendLines(sender, args.input);
      } else {
        sendSample(sender, args.sampleUsers, args.eventsPerUser, System.currentTimeMillis());
      }
      sent = sender.finish();
    }
    double seconds = (System.nanoTime() - started) / 1e9;
    ObjectNode summary = JSON.createObjectNode();
    summary.put("sent", sent);
    summary.put("seconds", Math.round(seconds * 1000) / 1000.0);
    summary.put("events_per_s", seconds > 0 ? Math.round(sent / seconds) : 0);
    System.out.println(JSON.writeValueAsString(summary));
  }

  /** Batched, acknowledged by every in-sync replica, never written twice by a client retry. */
  static Properties clientProperties(Args args, Map<String, String> env) throws IOException {
    Properties props = new Properties();
    props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, args.broker);
    props.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
    props.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
    props.put(ProducerConfig.ACKS_CONFIG, "all");
    props.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, "true");
    props.put(ProducerConfig.LINGER_MS_CONFIG, String.valueOf(args.lingerMs));
    props.put(ProducerConfig.BATCH_SIZE_CONFIG, String.valueOf(args.batchBytes));
    props.putAll(Security.fromEnvironment(env));
    if (args.commandConfig != null) {
      try (InputStream in = Files.newInputStream(args.commandConfig)) {
        props.load(in);
      }
    }
    return props;
  }

  static void sendLines(Sender sender, Path input) throws IOException {
    try (BufferedReader lines = Files.newBufferedReader(input, StandardCharsets.UTF_8)) {
      String line;
      int number = 0;
      while ((line = lines.readLine()) != null) {
        number++;
        if (line.isBlank()) {
          continue;
        }
        JsonNode event = JSON.readTree(line);
        if (!event.hasNonNull("user_id") || !event.hasNonNull("event_id")) {
          throw new IllegalArgumentException("line " + number + ": needs user_id and event_id");
        }
        sender.send(event.get("user_id").asText(), line.getBytes(StandardCharsets.UTF_8));
      }
    }
  }

  /** A small history: each user logs in a few times over the last hours. */
  static void sendSample(Sender sender, int users, int perUser, long nowMs) throws IOException {
    for (int n = 0; n < perUser; n++) {
      for (int u = 0; u < users; u++) {
        String user = "u" + u;
        ObjectNode event = JSON.createObjectNode();
        event.put("event_id", "sample-" + user + "-login-" + n);
        event.put("user_id", user);
        event.put("type", "login");
        event.put("ts", nowMs - (perUser - n) * HOUR_MS);
        event.put("tenant", "acme");
        sender.send(user, JSON.writeValueAsBytes(event));
      }
    }
  }

  /** Hands records to the client without waiting; counts acknowledgements, stops at an error. */
  static final class Sender {
    private final KafkaProducer<String, byte[]> producer;
    private final String topic;
    private final AtomicLong acknowledged = new AtomicLong();
    private final AtomicReference<Exception> firstError = new AtomicReference<>();

    Sender(KafkaProducer<String, byte[]> producer, String topic) {
      this.producer = producer;
      this.topic = topic;
    }

    void send(String userId, byte[] value) {
      // A failed record (a refused login, a missing topic) fails the run at once.
      Exception failed = firstError.get();
      if (failed != null) {
        throw new IllegalStateException("records not acknowledged: " + failed, failed);
      }
      producer.send(
          new ProducerRecord<>(topic, userId, value),
          (metadata, error) -> {
            if (error == null) {
              acknowledged.incrementAndGet();
            } else {
              firstError.compareAndSet(null, error);
            }
          });
    }

    /** Waits for every record; a record the client could not deliver fails the run. */
    long finish() {
      producer.flush();
      Exception error = firstError.get();
      if (error != null) {
        throw new IllegalStateException("records not acknowledged: " + error, error);
      }
      return acknowledged.get();
    }
  }
}
