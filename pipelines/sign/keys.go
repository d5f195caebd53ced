package sign

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/sigstore/cosign/v2/pkg/cosign"
	rekorapi "github.com/sigstore/rekor/pkg/generated/client"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// Environment variables the keyed signer reads (never logged).
const (
	EnvPassword = "COSIGN_PASSWORD" // the private key's password (cosign's own name)
	envPrefix   = "env://"          // --key env://NAME: the PEM is in $NAME
)

// Key is a signing key and where it came from.
type Key struct {
	Signer    signature.SignerVerifier
	PublicPEM []byte
	Source    string // file path or env://NAME; never the key itself
	// Development: created by the pipeline on this machine because no key
	// was given. Good for trying the flow, not for releases (labelled so in
	// the progress output, manifest.json and the summary).
	Development bool
	// Keyless: the Fulcio certificate (and chain) for Signer's public key,
	// and the Rekor log every signature is recorded in.
	Cert, Chain []byte
	Rekor       *rekorapi.Rekor
}

// LoadKey reads a cosign private key (cosign's encrypted PEM) from a file
// or from env://NAME, its password from COSIGN_PASSWORD.
func LoadKey(ref string, getenv func(string) string) (*Key, error) {
	var pem []byte
	if name, ok := strings.CutPrefix(ref, envPrefix); ok {
		pem = []byte(getenv(name))
		if len(pem) == 0 {
			return nil, fmt.Errorf("--key %s: $%s is empty (it should hold a cosign private key PEM)", ref, name)
		}
	} else {
		var err error
		if pem, err = os.ReadFile(ref); err != nil {
			return nil, fmt.Errorf("--key: %w (a cosign private key file, or env://NAME)", err)
		}
	}
	sv, err := cosign.LoadPrivateKey(pem, []byte(getenv(EnvPassword)), nil)
	if err != nil {
		// The error says whether the password or the PEM is wrong; it never
		// includes either.
		return nil, fmt.Errorf("--key %s: cannot load the private key (is $%s the key's password?): %w", ref, EnvPassword, err)
	}
	return withPublicPEM(&Key{Signer: sv, Source: ref})
}

func withPublicPEM(k *Key) (*Key, error) {
	pub, err := k.Signer.PublicKey()
	if err != nil {
		return nil, err
	}
	if k.PublicPEM, err = cryptoutils.MarshalPublicKeyToPEM(pub); err != nil {
		return nil, err
	}
	return k, nil
}

// DefaultDevKeyDir keeps the development key pair, outside any repository.
func DefaultDevKeyDir() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "darktower", "cosign-dev")
}

// DevKey returns the machine's development key pair, creating it (once)
// in dir: cosign.key (mode 0600, no password) and cosign.pub.
func DevKey(dir string) (*Key, error) {
	priv, pub := filepath.Join(dir, "cosign.key"), filepath.Join(dir, "cosign.pub")
	if _, err := os.Stat(priv); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		keys, err := cosign.GenerateKeyPair(func(bool) ([]byte, error) { return nil, nil })
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(pub, keys.PublicBytes, 0o644); err != nil {
			return nil, err
		}
		// Written last: a present private key means a complete pair.
		if err := os.WriteFile(priv, keys.PrivateBytes, 0o600); err != nil {
			return nil, err
		}
	}
	k, err := LoadKey(priv, func(string) string { return "" })
	if err != nil {
		return nil, fmt.Errorf("development key %s: %w (delete %s to make a new one)", priv, err, dir)
	}
	k.Development = true
	if onDisk, err := os.ReadFile(pub); err != nil || !bytes.Equal(bytes.TrimSpace(onDisk), bytes.TrimSpace(k.PublicPEM)) {
		if err := os.WriteFile(pub, k.PublicPEM, 0o644); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// PublicKeyVerifier loads a PEM public key for verification.
func PublicKeyVerifier(pem []byte) (signature.Verifier, error) {
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pem)
	if err != nil {
		return nil, fmt.Errorf("not a PEM public key: %w", err)
	}
	return signature.LoadDefaultVerifier(pub)
}
