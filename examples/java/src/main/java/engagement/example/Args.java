package engagement.example;

import java.nio.file.Path;
import java.util.Map;

/** Command-line flags; broker and topic default to the worker's own ENGAGEMENT_* variables. */
final class Args {
  String broker;
  String topic;
  Path input;
  int sampleUsers;
  int eventsPerUser = 3;
  int lingerMs = 20;
  int batchBytes = 512 * 1024;
  Path commandConfig;

  private static final String USAGE =
      "usage: engagement-producer [--broker HOST:PORT[,...]] [--topic NAME]\n"
          + "    (--input EVENTS.jsonl | --sample-users N [--events-per-user M])\n"
          + "    [--linger-ms MS] [--batch-bytes BYTES] [--command-config CLIENT.properties]\n"
          + "TLS and SASL: ENGAGEMENT_KAFKA_SECURITY_PROTOCOL, _SASL_MECHANISM, _SASL_USERNAME,\n"
          + "_SASL_PASSWORD (or _SASL_PASSWORD_FILE), _SSL_CAFILE, _SSL_CERTFILE, _SSL_KEYFILE\n"
          + "(as the worker reads them).";

  static Args parse(String[] argv, Map<String, String> env) {
    Args args = new Args();
    args.broker = hosts(env.getOrDefault("ENGAGEMENT_BROKER", "localhost:9092"));
    args.topic = env.getOrDefault("ENGAGEMENT_TOPIC_EVENTS", "engagement.events");
    for (int i = 0; i < argv.length; i++) {
      String flag = argv[i];
      if (flag.equals("-h") || flag.equals("--help")) {
        System.out.println(USAGE);
        System.exit(0);
      }
      if (i + 1 >= argv.length) {
        throw usage(flag + " needs a value");
      }
      String value = argv[++i];
      switch (flag) {
        case "--broker" -> args.broker = hosts(value);
        case "--topic" -> args.topic = value;
        case "--input" -> args.input = Path.of(value);
        case "--sample-users" -> args.sampleUsers = Integer.parseInt(value);
        case "--events-per-user" -> args.eventsPerUser = Integer.parseInt(value);
        case "--linger-ms" -> args.lingerMs = Integer.parseInt(value);
        case "--batch-bytes" -> args.batchBytes = Integer.parseInt(value);
        case "--command-config" -> args.commandConfig = Path.of(value);
        default -> throw usage("unknown flag " + flag);
      }
    }
    if ((args.input == null) == (args.sampleUsers <= 0)) {
      throw usage("give exactly one of --input or --sample-users");
    }
    return args;
  }

  /** The worker's broker form (kafka://host:port;host:port) as a bootstrap list. */
  private static String hosts(String broker) {
    return broker.replace("kafka://", "").replace(';', ',');
  }

  private static IllegalArgumentException usage(String problem) {
    return new IllegalArgumentException(problem + "\n" + USAGE);
  }
}
