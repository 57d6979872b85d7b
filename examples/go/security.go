package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// transportFromEnv builds the connection's TLS and SASL from the worker's own
// ENGAGEMENT_KAFKA_* variables (docs/CONTRACTS.md, "Settings").
func transportFromEnv(getenv func(string) string) (*kafka.Transport, error) {
	protocol := strings.ToUpper(envOr(getenv, "ENGAGEMENT_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"))
	transport := &kafka.Transport{}
	switch protocol {
	case "PLAINTEXT", "SASL_PLAINTEXT":
	case "SSL", "SASL_SSL":
		config, err := tlsConfig(getenv)
		if err != nil {
			return nil, err
		}
		transport.TLS = config
	default:
		return nil, fmt.Errorf("unknown ENGAGEMENT_KAFKA_SECURITY_PROTOCOL %q", protocol)
	}
	if strings.HasPrefix(protocol, "SASL") {
		mechanism, err := saslMechanism(getenv)
		if err != nil {
			return nil, err
		}
		transport.SASL = mechanism
	}
	return transport, nil
}

func tlsConfig(getenv func(string) string) (*tls.Config, error) {
	config := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile := getenv("ENGAGEMENT_KAFKA_SSL_CAFILE"); caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("no certificate in %s", caFile)
		}
		config.RootCAs = pool
	}
	certFile, keyFile := getenv("ENGAGEMENT_KAFKA_SSL_CERTFILE"), getenv("ENGAGEMENT_KAFKA_SSL_KEYFILE")
	if certFile != "" {
		pair, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		config.Certificates = []tls.Certificate{pair}
	}
	return config, nil
}

func saslMechanism(getenv func(string) string) (sasl.Mechanism, error) {
	name := strings.ToUpper(getenv("ENGAGEMENT_KAFKA_SASL_MECHANISM"))
	user := getenv("ENGAGEMENT_KAFKA_SASL_USERNAME")
	password, err := secret(getenv, "ENGAGEMENT_KAFKA_SASL_PASSWORD")
	if err != nil {
		return nil, err
	}
	if user == "" || password == "" {
		return nil, fmt.Errorf("SASL needs ENGAGEMENT_KAFKA_SASL_USERNAME and ENGAGEMENT_KAFKA_SASL_PASSWORD (or _FILE)")
	}
	switch name {
	case "PLAIN":
		return plain.Mechanism{Username: user, Password: password}, nil
	case "SCRAM-SHA-256":
		return scram.Mechanism(scram.SHA256, user, password)
	case "SCRAM-SHA-512":
		return scram.Mechanism(scram.SHA512, user, password)
	default:
		return nil, fmt.Errorf("unknown ENGAGEMENT_KAFKA_SASL_MECHANISM %q (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)", name)
	}
}

// secret is the variable's value, or the content of the file its _FILE variant
// names without the trailing line break, as the worker reads secrets. Both set
// is refused; errors name the variable and the path, never the secret.
func secret(getenv func(string) string, name string) (string, error) {
	path := getenv(name + "_FILE")
	if path == "" {
		return getenv(name), nil
	}
	if getenv(name) != "" {
		return "", fmt.Errorf("both %s and %s_FILE are set: give the password one way only", name, name)
	}
	content, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s_FILE: cannot read %q: %v", name, path, errors.Unwrap(err))
	}
	return strings.TrimRight(string(content), "\r\n"), nil
}
