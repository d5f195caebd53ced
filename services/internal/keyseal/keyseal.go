// Package keyseal encrypts key material at rest with AES-256-GCM under a
// master key. The associated data binds a sealed blob to its identity (a
// key ID), so a blob copied onto another row does not open.
package keyseal

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
)

// MasterKeySize is the AES-256 key length.
const MasterKeySize = 32

// ErrOpen is returned for any blob that does not authenticate: wrong master
// key, wrong associated data, or tampering.
var ErrOpen = errors.New("keyseal: sealed data does not authenticate")

func aead(master []byte) (cipher.AEAD, error) {
	if len(master) != MasterKeySize {
		return nil, fmt.Errorf("keyseal: master key is %d bytes, want %d", len(master), MasterKeySize)
	}
	block, err := aes.NewCipher(master)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Seal returns nonce || ciphertext || tag.
func Seal(master, plaintext, associated []byte) ([]byte, error) {
	g, err := aead(master)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, g.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return g.Seal(nonce, nonce, plaintext, associated), nil
}

// Open reverses Seal.
func Open(master, sealed, associated []byte) ([]byte, error) {
	g, err := aead(master)
	if err != nil {
		return nil, err
	}
	if len(sealed) < g.NonceSize()+g.Overhead() {
		return nil, ErrOpen
	}
	nonce, ct := sealed[:g.NonceSize()], sealed[g.NonceSize():]
	pt, err := g.Open(nil, nonce, ct, associated)
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}
