package opskit

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"time"
)

// serverCertificate loads the API listener's certificate, or generates a
// self-signed one when the operator explicitly asked for development mode.
func serverCertificate(c Common) (tls.Certificate, error) {
	if c.DevSelfSignedTLS {
		return selfSignedCertificate(c.Service)
	}
	cert, err := tls.LoadX509KeyPair(c.TLSCertFile, c.TLSKeyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("loading TLS_CERT_FILE/TLS_KEY_FILE: %w", err)
	}
	return cert, nil
}

// selfSignedCertificate makes a throwaway ECDSA certificate for localhost
// and the host name; it is only for development.
func selfSignedCertificate(commonName string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return tls.Certificate{}, err
	}
	names := []string{"localhost", commonName}
	if h, err := os.Hostname(); err == nil {
		names = append(names, h)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: commonName},
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     names,
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// ClientTLS trusts the system roots plus caFile (read from the variable
// named env, which errors name), so peers with certificates from the
// cluster's CA can be verified.
func ClientTLS(env, caFile string) (*tls.Config, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", env, err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s %q holds no PEM certificate", env, caFile)
		}
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}

// NewHTTPClient returns the client services use to call each other: HTTP/2
// over TLS, bounded timeouts.
func NewHTTPClient(cfg *tls.Config) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:       cfg,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   8,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: 5 * time.Second,
		DialContext:           (&net.Dialer{Timeout: 3 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// PinnedClient is base with connections to addr (host:port) made to `to`
// instead, every other address dialled as usual. TLS still verifies addr's
// host name: this is how one pod of a Service is called by the Service's
// name, which is the name in every pod's certificate.
func PinnedClient(base *http.Client, addr, to string) *http.Client {
	tr, ok := base.Transport.(*http.Transport)
	if !ok {
		tr = http.DefaultTransport.(*http.Transport)
	}
	tr = tr.Clone()
	dial := tr.DialContext
	if dial == nil {
		dial = (&net.Dialer{Timeout: 3 * time.Second}).DialContext
	}
	tr.DialContext = func(ctx context.Context, network, a string) (net.Conn, error) {
		if a == addr {
			a = to
		}
		return dial(ctx, network, a)
	}
	c := *base
	c.Transport = tr
	return &c
}
