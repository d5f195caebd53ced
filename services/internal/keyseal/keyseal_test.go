package keyseal

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
)

func key(t *testing.T) []byte {
	k := make([]byte, MasterKeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpenRoundTrip(t *testing.T) {
	master, secret := key(t), []byte("ed25519 seed, 32 bytes long.....")
	sealed, err := Seal(master, secret, []byte("kid-1"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, secret) {
		t.Fatal("plaintext visible in sealed blob")
	}
	again, _ := Seal(master, secret, []byte("kid-1"))
	if bytes.Equal(sealed, again) {
		t.Fatal("two seals are identical: nonce reused")
	}
	got, err := Open(master, sealed, []byte("kid-1"))
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Open = %q, %v", got, err)
	}
}

func TestOpenRefusesEveryMismatch(t *testing.T) {
	master := key(t)
	sealed, err := Seal(master, []byte("secret"), []byte("kid-1"))
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(sealed)
	tampered[len(tampered)-1] ^= 1
	cases := map[string]struct {
		master, blob, aad []byte
	}{
		"wrong master key":      {key(t), sealed, []byte("kid-1")},
		"blob moved to another": {master, sealed, []byte("kid-2")},
		"tampered":              {master, tampered, []byte("kid-1")},
		"truncated":             {master, sealed[:10], []byte("kid-1")},
	}
	for name, c := range cases {
		if _, err := Open(c.master, c.blob, c.aad); !errors.Is(err, ErrOpen) {
			t.Errorf("%s: err = %v, want ErrOpen", name, err)
		}
	}
	if _, err := Seal(make([]byte, 16), []byte("x"), nil); err == nil {
		t.Error("a 16-byte master key was accepted for AES-256")
	}
}
