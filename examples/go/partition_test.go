package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"
)

// Java's Utils.murmur2 of UTF-8 keys, from kafka-clients 4.3.1 (the first six
// are the vectors of Kafka's own UtilsTest.testMurmur2).
var javaMurmur2 = map[string]int32{
	"21":                         -973932308,
	"foobar":                     -790332482,
	"a-little-bit-long-string":   -985981536,
	"a-little-bit-longer-string": -1486304829,
	"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
	"abc":            479470107,
	"":               275646681,
	"u0":             -1243663674,
	"u1":             745337584,
	"user-42":        1459644460,
	"üser-ß":         -545490822,
	"tenant/acme:u7": 2015502198,
}

// The Java client's partition of a keyed record: Utils.toPositive(murmur2(key)) % n.
func javaPartition(hash int32, partitions int) int {
	return int(uint32(hash)&0x7fffffff) % partitions
}

func TestMurmur2BalancerPicksJavasPartition(t *testing.T) {
	balancer := &kafka.Murmur2Balancer{}
	for _, n := range []int{1, 4, 7, 32, 100} {
		all := make([]int, n)
		for i := range all {
			all[i] = i
		}
		for key, hash := range javaMurmur2 {
			got := balancer.Balance(kafka.Message{Key: []byte(key)}, all...)
			if want := javaPartition(hash, n); got != want {
				t.Errorf("key %q, %d partitions: balancer %d, Java %d", key, n, got, want)
			}
		}
	}
}

func TestRoundRobinDefaultWouldScatterAUser(t *testing.T) {
	// kafka-go's Writer defaults to round-robin: the same key lands on several partitions.
	balancer := &kafka.RoundRobin{}
	seen := map[int]bool{}
	for i := 0; i < 4; i++ {
		seen[balancer.Balance(kafka.Message{Key: []byte("u0")}, 0, 1, 2, 3)] = true
	}
	if len(seen) < 2 {
		t.Fatalf("round-robin kept one key on %d partition", len(seen))
	}
}

func TestFlagsAndEnvironment(t *testing.T) {
	env := map[string]string{"ENGAGEMENT_BROKER": "kafka://a:9092;b:9093", "ENGAGEMENT_TOPIC_EVENTS": "t.events"}
	getenv := func(name string) string { return env[name] }
	opts, err := parseFlags([]string{"--sample-users", "5"}, getenv)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(brokers(opts.broker), ","); got != "a:9092,b:9093" || opts.topic != "t.events" {
		t.Fatalf("brokers %s topic %s", got, opts.topic)
	}
	if _, err := parseFlags([]string{"--sample-users", "5", "--input", "x"}, getenv); err == nil {
		t.Fatal("both sources accepted")
	}
	if _, err := parseFlags(nil, getenv); err == nil {
		t.Fatal("no source accepted")
	}
}

func TestSecuritySettings(t *testing.T) {
	env := map[string]string{
		"ENGAGEMENT_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
		"ENGAGEMENT_KAFKA_SASL_MECHANISM":    "SCRAM-SHA-512",
		"ENGAGEMENT_KAFKA_SASL_USERNAME":     "producer",
		"ENGAGEMENT_KAFKA_SASL_PASSWORD":     "secret",
	}
	getenv := func(name string) string { return env[name] }
	transport, err := transportFromEnv(getenv)
	if err != nil {
		t.Fatal(err)
	}
	if transport.TLS == nil || transport.SASL == nil || transport.SASL.Name() != "SCRAM-SHA-512" {
		t.Fatalf("TLS %v SASL %v", transport.TLS, transport.SASL)
	}
	env["ENGAGEMENT_KAFKA_SASL_MECHANISM"] = "GSSAPI"
	if _, err := transportFromEnv(getenv); err == nil || !strings.Contains(err.Error(), "GSSAPI") {
		t.Fatalf("unknown mechanism accepted: %v", err)
	}
	env["ENGAGEMENT_KAFKA_SASL_MECHANISM"] = "PLAIN"
	file := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(file, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env["ENGAGEMENT_KAFKA_SASL_PASSWORD_FILE"] = file
	if _, err := transportFromEnv(getenv); err == nil || !strings.Contains(err.Error(), "one way only") {
		t.Fatalf("a password given twice accepted: %v", err)
	}
	delete(env, "ENGAGEMENT_KAFKA_SASL_PASSWORD")
	if password, err := secret(getenv, "ENGAGEMENT_KAFKA_SASL_PASSWORD"); err != nil || password != "from-file" {
		t.Fatalf("password from the file: %q %v", password, err)
	}
	if _, err := transportFromEnv(getenv); err != nil {
		t.Fatal(err)
	}
	env["ENGAGEMENT_KAFKA_SASL_PASSWORD_FILE"] = file + ".absent"
	if _, err := transportFromEnv(getenv); err == nil || !strings.Contains(err.Error(), "cannot read") {
		t.Fatalf("an unreadable password file accepted: %v", err)
	}
	delete(env, "ENGAGEMENT_KAFKA_SASL_PASSWORD_FILE")
	if _, err := transportFromEnv(getenv); err == nil {
		t.Fatal("SASL without a password accepted")
	}
	env["ENGAGEMENT_KAFKA_SECURITY_PROTOCOL"] = "SSL"
	env["ENGAGEMENT_KAFKA_SSL_CAFILE"] = "/nonexistent/ca.pem"
	if _, err := transportFromEnv(getenv); err == nil {
		t.Fatal("missing CA file accepted")
	}
	env["ENGAGEMENT_KAFKA_SECURITY_PROTOCOL"] = "TLS"
	if _, err := transportFromEnv(getenv); err == nil {
		t.Fatal("unknown protocol accepted")
	}
}
