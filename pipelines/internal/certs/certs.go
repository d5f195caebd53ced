// Package certs issues the ECDSA P-256 certificates the pipeline makes for
// itself: the simulated cluster's PKI and the local environment's secrets.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"io"
	"math/big"
)

// Pair is an issued certificate, its key, and both as PEM.
type Pair struct {
	Cert    *x509.Certificate
	Key     *ecdsa.PrivateKey
	CertPEM []byte
	KeyPEM  []byte // PKCS #8
}

// Issue signs tmpl with parent (self-signed when parent is nil), with a
// fresh key and a random serial, drawing randomness from r
// (crypto/rand.Reader when nil).
func Issue(tmpl *x509.Certificate, parent *Pair, r io.Reader) (*Pair, error) {
	if r == nil {
		r = rand.Reader
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), r)
	if err != nil {
		return nil, err
	}
	t := *tmpl
	if t.SerialNumber, err = rand.Int(r, new(big.Int).Lsh(big.NewInt(1), 127)); err != nil {
		return nil, err
	}
	signer, parentCert := key, &t
	if parent != nil {
		signer, parentCert = parent.Key, parent.Cert
	}
	der, err := x509.CreateCertificate(r, &t, parentCert, &key.PublicKey, signer)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	return &Pair{Cert: cert, Key: key,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})}, nil
}
