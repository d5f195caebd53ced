// Package authn issues and verifies the EdDSA (Ed25519) access tokens AC
// hands to service clients, and publishes/consumes AC's JWKS.
package authn

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// MaxTokenTTL is the longest lifetime AC may give an access token.
const MaxTokenTTL = 15 * time.Minute

// Signer issues access tokens with one Ed25519 key.
type Signer struct {
	KeyID  string
	Key    ed25519.PrivateKey
	Issuer string
	TTL    time.Duration
}

// Claims are AC's token claims: the registered ones and the instance ids
// the client may register (from its entry in AC_CLIENTS_FILE).
type Claims struct {
	jwt.RegisteredClaims
	// Instances are the registry ids the subject owns: exact ids, or a
	// prefix followed by "*" (e.g. "meeting-controller-*" for a
	// Deployment's pod names).
	Instances []string `json:"instances,omitempty"`
}

// OwnsInstance reports whether id is one of the subject's instances.
func (c *Claims) OwnsInstance(id string) bool {
	if c == nil || id == "" {
		return false
	}
	for _, p := range c.Instances {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(id, prefix) && len(id) > len(prefix) {
				return true
			}
		} else if id == p {
			return true
		}
	}
	return false
}

// Issue returns a signed JWT for subject and audience and its expiry; the
// subject owns the given instance ids (patterns).
func (s Signer) Issue(subject, audience string, now time.Time, instances ...string) (string, time.Time, error) {
	if s.TTL <= 0 || s.TTL > MaxTokenTTL {
		return "", time.Time{}, fmt.Errorf("token TTL %s outside (0, %s]", s.TTL, MaxTokenTTL)
	}
	exp := now.Add(s.TTL)
	claims := Claims{RegisteredClaims: jwt.RegisteredClaims{
		Issuer:    s.Issuer,
		Subject:   subject,
		Audience:  jwt.ClaimStrings{audience},
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now),
		ExpiresAt: jwt.NewNumericDate(exp),
	}, Instances: instances}
	tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims)
	tok.Header["kid"] = s.KeyID
	signed, err := tok.SignedString(s.Key)
	if err != nil {
		return "", time.Time{}, err
	}
	return signed, exp, nil
}

// JWK is one Ed25519 public key in RFC 8037 form.
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Kid string `json:"kid"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
}

// JWKS is a JSON Web Key Set.
type JWKS struct {
	Keys []JWK `json:"keys"`
}

// PublicJWK encodes an Ed25519 public key.
func PublicJWK(kid string, pub ed25519.PublicKey) JWK {
	return JWK{Kty: "OKP", Crv: "Ed25519", X: base64.RawURLEncoding.EncodeToString(pub), Kid: kid, Use: "sig", Alg: "EdDSA"}
}

// ParseJWKS decodes a key set, keeping the Ed25519 signing keys; keys of
// other types are ignored, malformed Ed25519 keys are an error.
func ParseJWKS(b []byte) (map[string]ed25519.PublicKey, error) {
	var set JWKS
	if err := json.Unmarshal(b, &set); err != nil {
		return nil, fmt.Errorf("decoding JWKS: %w", err)
	}
	keys := make(map[string]ed25519.PublicKey, len(set.Keys))
	for i, k := range set.Keys {
		if k.Kty != "OKP" || k.Crv != "Ed25519" || (k.Use != "" && k.Use != "sig") {
			continue
		}
		x, err := base64.RawURLEncoding.DecodeString(k.X)
		if err != nil || len(x) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("JWKS key %d (kid %q): x is not a base64url Ed25519 public key", i, k.Kid)
		}
		if k.Kid == "" {
			return nil, fmt.Errorf("JWKS key %d has no kid", i)
		}
		keys[k.Kid] = ed25519.PublicKey(x)
	}
	if len(keys) == 0 {
		return nil, errors.New("JWKS holds no Ed25519 signing key")
	}
	return keys, nil
}
