package engagement.example;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;

/** Client properties for TLS and SASL from the worker's own ENGAGEMENT_KAFKA_* variables. */
final class Security {
  private static final String PREFIX = "ENGAGEMENT_KAFKA_";

  private Security() {}

  static Map<String, String> fromEnvironment(Map<String, String> env) throws IOException {
    Map<String, String> props = new HashMap<>();
    String protocol = env.getOrDefault(PREFIX + "SECURITY_PROTOCOL", "PLAINTEXT");
    protocol = protocol.toUpperCase(Locale.ROOT);
    props.put("security.protocol", protocol);
    if (protocol.contains("SSL")) {
      String caFile = env.get(PREFIX + "SSL_CAFILE");
      if (caFile != null) {
        props.put("ssl.truststore.type", "PEM");
        props.put("ssl.truststore.location", caFile);
      }
      String certFile = env.get(PREFIX + "SSL_CERTFILE");
      String keyFile = env.get(PREFIX + "SSL_KEYFILE");
      if (certFile != null && keyFile != null) {
        // A PEM key store is given by content: the certificate chain and an unencrypted PKCS#8 key.
        props.put("ssl.keystore.type", "PEM");
        props.put("ssl.keystore.certificate.chain", read(certFile));
        props.put("ssl.keystore.key", read(keyFile));
      }
    }
    if (protocol.startsWith("SASL")) {
      String mechanism = env.get(PREFIX + "SASL_MECHANISM");
      String user = env.get(PREFIX + "SASL_USERNAME");
      String password = secret(env, PREFIX + "SASL_PASSWORD");
      if (mechanism == null || user == null || password == null) {
        throw new IllegalArgumentException(
            protocol + " needs " + PREFIX + "SASL_MECHANISM, _SASL_USERNAME and _SASL_PASSWORD");
      }
      mechanism = mechanism.toUpperCase(Locale.ROOT);
      String module =
          mechanism.startsWith("SCRAM")
              ? "org.apache.kafka.common.security.scram.ScramLoginModule"
              : "org.apache.kafka.common.security.plain.PlainLoginModule";
      props.put("sasl.mechanism", mechanism);
      props.put(
          "sasl.jaas.config",
          module + " required username=\"" + quote(user) + "\" password=\"" + quote(password) + "\";");
    }
    return props;
  }

  /**
   * A secret from its variable, or from the file its _FILE variant names (as the worker reads
   * secrets: the file's content without its trailing line break). Both set is refused; errors
   * name the variable and the path, never the secret.
   */
  static String secret(Map<String, String> env, String name) {
    String path = env.get(name + "_FILE");
    if (path == null) {
      return env.get(name);
    }
    if (env.containsKey(name)) {
      throw new IllegalArgumentException(
          "both " + name + " and " + name + "_FILE are set: give the password one way only");
    }
    try {
      return read(path).replaceAll("[\\r\\n]+$", "");
    } catch (IOException e) {
      throw new IllegalArgumentException(
          name + "_FILE: cannot read '" + path + "': " + e.getClass().getSimpleName());
    }
  }

  private static String read(String path) throws IOException {
    return Files.readString(Path.of(path), StandardCharsets.UTF_8);
  }

  private static String quote(String value) {
    return value.replace("\\", "\\\\").replace("\"", "\\\"");
  }
}
