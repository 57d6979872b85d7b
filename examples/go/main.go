// Command engagement-producer publishes user events to the engine's input
// topic, the way docs/CONTRACTS.md asks.
//
//	engagement-producer --broker localhost:9092 --input events.jsonl
//	engagement-producer --broker localhost:9092 --sample-users 20000
//
// Key = user id (UTF-8), partition = Kafka's default murmur2 of the key (the
// Java client's rule). kafka-go's default balancer is round-robin and would
// scatter a user's events over every partition (the engine sends those to its
// DLQ as wrong_partition): this producer sets kafka.Murmur2Balancer.
//
// --input reads JSON Lines of contract events, each with its own stable
// event_id, and sends each line unchanged. Broker, topic, TLS and SASL come
// from the worker's own ENGAGEMENT_* variables (flags override broker and
// topic). Prints {"sent": N, "seconds": S, "events_per_s": R} once every
// record is acknowledged.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
)

// chunk is how many records one WriteMessages call hands to the writer; the
// writer batches them per partition and returns once all are acknowledged.
const chunk = 20_000

type options struct {
	broker        string
	topic         string
	input         string
	sampleUsers   int
	eventsPerUser int
	linger        time.Duration
	batchBytes    int64
}

func parseFlags(args []string, getenv func(string) string) (options, error) {
	opts := options{}
	fs := flag.NewFlagSet("engagement-producer", flag.ContinueOnError)
	fs.StringVar(&opts.broker, "broker", envOr(getenv, "ENGAGEMENT_BROKER", "localhost:9092"), "host:port[,...]")
	fs.StringVar(&opts.topic, "topic", envOr(getenv, "ENGAGEMENT_TOPIC_EVENTS", "engagement.events"), "input topic")
	fs.StringVar(&opts.input, "input", "", "JSON Lines of contract events")
	fs.IntVar(&opts.sampleUsers, "sample-users", 0, "generate a sample history for this many users")
	fs.IntVar(&opts.eventsPerUser, "events-per-user", 3, "sample events per user")
	fs.DurationVar(&opts.linger, "linger", 20*time.Millisecond, "how long a batch waits to fill")
	fs.Int64Var(&opts.batchBytes, "batch-bytes", 1<<20, "largest batch in bytes")
	if err := fs.Parse(args); err != nil {
		return opts, err
	}
	if (opts.input == "") == (opts.sampleUsers <= 0) {
		return opts, errors.New("give exactly one of --input or --sample-users")
	}
	return opts, nil
}

func envOr(getenv func(string) string, name, fallback string) string {
	if value := getenv(name); value != "" {
		return value
	}
	return fallback
}

// brokers turns the worker's broker form (kafka://host:port;host:port) into a list.
func brokers(broker string) []string {
	broker = strings.ReplaceAll(broker, "kafka://", "")
	return strings.FieldsFunc(broker, func(r rune) bool { return r == ',' || r == ';' })
}

func newWriter(opts options, transport *kafka.Transport) *kafka.Writer {
	return &kafka.Writer{
		Addr:         kafka.TCP(brokers(opts.broker)...),
		Topic:        opts.topic,
		Balancer:     &kafka.Murmur2Balancer{},
		RequiredAcks: kafka.RequireAll,
		BatchSize:    chunk,
		BatchBytes:   opts.batchBytes,
		BatchTimeout: opts.linger,
		Transport:    transport,
	}
}

func run(ctx context.Context, opts options, getenv func(string) string, stdout io.Writer) error {
	transport, err := transportFromEnv(getenv)
	if err != nil {
		return err
	}
	writer := newWriter(opts, transport)
	started := time.Now()
	sender := &sender{writer: writer}
	if opts.input != "" {
		err = sendLines(ctx, sender, opts.input)
	} else {
		err = sendSample(ctx, sender, opts.sampleUsers, opts.eventsPerUser, time.Now().UnixMilli())
	}
	if err == nil {
		err = sender.flush(ctx)
	}
	if closeErr := writer.Close(); err == nil {
		err = closeErr
	}
	if err != nil {
		return err
	}
	seconds := time.Since(started).Seconds()
	rate := 0.0
	if seconds > 0 {
		rate = float64(sender.sent) / seconds
	}
	summary, _ := json.Marshal(map[string]any{
		"sent": sender.sent, "seconds": float64(int(seconds*1000)) / 1000, "events_per_s": int64(rate),
	})
	_, err = fmt.Fprintln(stdout, string(summary))
	return err
}

// sender groups records into chunks and counts the acknowledged ones.
type sender struct {
	writer  *kafka.Writer
	pending []kafka.Message
	sent    int
}

func (s *sender) send(ctx context.Context, userID string, value []byte) error {
	s.pending = append(s.pending, kafka.Message{Key: []byte(userID), Value: value})
	if len(s.pending) >= chunk {
		return s.flush(ctx)
	}
	return nil
}

func (s *sender) flush(ctx context.Context) error {
	if len(s.pending) == 0 {
		return nil
	}
	// The writer retries each batch itself (MaxAttempts); an error here means
	// records were not acknowledged, and the run fails instead of going on.
	if err := s.writer.WriteMessages(ctx, s.pending...); err != nil {
		return fmt.Errorf("records not acknowledged: %w", err)
	}
	s.sent += len(s.pending)
	s.pending = s.pending[:0]
	return nil
}

type contractEvent struct {
	EventID string `json:"event_id"`
	UserID  string `json:"user_id"`
	Type    string `json:"type"`
	TsMs    int64  `json:"ts"`
	Tenant  string `json:"tenant,omitempty"`
}

// sendSample sends a small history: each user logs in a few times over the last hours.
func sendSample(ctx context.Context, s *sender, users, perUser int, nowMs int64) error {
	const hourMs = 3_600_000
	for n := 0; n < perUser; n++ {
		for u := 0; u < users; u++ {
			user := fmt.Sprintf("u%d", u)
			value, err := json.Marshal(contractEvent{
				EventID: fmt.Sprintf("sample-%s-login-%d", user, n),
				UserID:  user,
				Type:    "login",
				TsMs:    nowMs - int64(perUser-n)*hourMs,
				Tenant:  "acme",
			})
			if err != nil {
				return err
			}
			if err := s.send(ctx, user, value); err != nil {
				return err
			}
		}
	}
	return nil
}

// sendLines sends each JSON line unchanged, keyed by its user_id.
func sendLines(ctx context.Context, s *sender, path string) error {
	file, err := os.Open(path)
	if err != nil {
		return err
	}
	defer file.Close()
	lines := bufio.NewScanner(file)
	lines.Buffer(make([]byte, 64*1024), 1<<20)
	for number := 1; lines.Scan(); number++ {
		line := lines.Bytes()
		if len(strings.TrimSpace(string(line))) == 0 {
			continue
		}
		var ids struct {
			EventID *string `json:"event_id"`
			UserID  *string `json:"user_id"`
		}
		if err := json.Unmarshal(line, &ids); err != nil {
			return fmt.Errorf("line %d: %w", number, err)
		}
		if ids.EventID == nil || ids.UserID == nil {
			return fmt.Errorf("line %d: needs user_id and event_id", number)
		}
		// The scanner reuses its buffer: the writer must own a copy.
		if err := s.send(ctx, *ids.UserID, append([]byte(nil), line...)); err != nil {
			return err
		}
	}
	return lines.Err()
}

func main() {
	opts, err := parseFlags(os.Args[1:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err == nil {
		err = run(context.Background(), opts, os.Getenv, os.Stdout)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "engagement-producer:", err)
		os.Exit(1)
	}
}
