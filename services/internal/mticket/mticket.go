// Package mticket is the media join ticket meeting-controller issues and
// media-handler checks before it forwards anything for a participant.
//
// A ticket is binary and authenticated with HMAC-SHA256 under a key MC
// generates and hands to its media handlers in the registration reply:
//
//	"DTT1" | key id (8) | expiry (8, big-endian Unix seconds)
//	       | len (1) | media-handler id | len (1) | session id | len (1) | participant id
//	       | HMAC-SHA256(key, every preceding byte) (32)
//
// Each length is 1..64.
package mticket

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"time"
)

const (
	// MaxFieldLen bounds each id in a ticket.
	MaxFieldLen = 64
	// MACLen is the length of the ticket's HMAC-SHA256.
	MACLen = 32
	// MaxLen is the longest ticket.
	MaxLen = 4 + 8 + 8 + 3*(1+MaxFieldLen) + MACLen
	// MinLen is the shortest ticket.
	MinLen = 4 + 8 + 8 + 3*2 + MACLen
)

var magic = []byte("DTT1")

// KeyID names a ticket key.
type KeyID [8]byte

// String is the hex form used in JSON.
func (k KeyID) String() string { return hex.EncodeToString(k[:]) }

// Key is one HMAC key with its id.
type Key struct {
	ID     KeyID
	Secret [32]byte
}

// NewKey makes a random key.
func NewKey() (Key, error) {
	var k Key
	if _, err := rand.Read(k.ID[:]); err != nil {
		return k, err
	}
	if _, err := rand.Read(k.Secret[:]); err != nil {
		return k, err
	}
	return k, nil
}

// Ticket is a parsed (not yet verified) ticket. Its fields alias the
// parsed buffer: parsing allocates nothing, so a flood of forged tickets
// costs no memory; copy what must outlive the buffer.
type Ticket struct {
	KeyID        KeyID
	Expiry       time.Time
	MediaHandler []byte
	Session      []byte
	Participant  []byte
	signed, mac  []byte // the authenticated bytes and their MAC
}

// MAC returns the ticket's MAC (bound into MH's return-routability cookie).
func (t *Ticket) MAC() []byte { return t.mac }

func validField(s string) bool { return len(s) >= 1 && len(s) <= MaxFieldLen }

// Issue makes a ticket.
func Issue(k Key, mediaHandler, session, participant string, expiry time.Time) ([]byte, error) {
	if !validField(mediaHandler) || !validField(session) || !validField(participant) {
		return nil, errors.New("media handler, session and participant ids must be 1..64 bytes")
	}
	b := make([]byte, 0, MaxLen)
	b = append(b, magic...)
	b = append(b, k.ID[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(expiry.Unix()))
	for _, f := range []string{mediaHandler, session, participant} {
		b = append(b, byte(len(f)))
		b = append(b, f...)
	}
	m := hmac.New(sha256.New, k.Secret[:])
	m.Write(b)
	return m.Sum(b), nil
}

// ErrMalformed is a ticket that does not parse.
var ErrMalformed = errors.New("malformed ticket")

// Parse reads a ticket's fields without checking its MAC.
func Parse(b []byte) (Ticket, error) {
	var t Ticket
	if len(b) < MinLen || len(b) > MaxLen || string(b[:4]) != string(magic) {
		return t, ErrMalformed
	}
	copy(t.KeyID[:], b[4:12])
	t.Expiry = time.Unix(int64(binary.BigEndian.Uint64(b[12:20])), 0)
	rest := b[20:]
	var fields [3][]byte
	for i := range fields {
		if len(rest) < 1 {
			return t, ErrMalformed
		}
		n := int(rest[0])
		if n < 1 || n > MaxFieldLen || len(rest) < 1+n {
			return t, ErrMalformed
		}
		fields[i] = rest[1 : 1+n]
		rest = rest[1+n:]
	}
	if len(rest) != MACLen {
		return t, ErrMalformed
	}
	t.MediaHandler, t.Session, t.Participant = fields[0], fields[1], fields[2]
	t.signed, t.mac = b[:len(b)-MACLen], b[len(b)-MACLen:]
	return t, nil
}

// Verify checks the MAC under k (whose id must match) in constant time.
func (t *Ticket) Verify(k Key) bool {
	if k.ID != t.KeyID || t.signed == nil {
		return false
	}
	m := hmac.New(sha256.New, k.Secret[:])
	m.Write(t.signed)
	return hmac.Equal(m.Sum(nil), t.mac)
}

// Encode returns the key's id (hex) and secret (base64) for JSON.
func (k Key) Encode() (kid, secret string) {
	return k.ID.String(), base64.StdEncoding.EncodeToString(k.Secret[:])
}

// DecodeKey is the inverse of Encode.
func DecodeKey(kid, secret string) (Key, error) {
	var k Key
	id, err1 := hex.DecodeString(kid)
	sec, err2 := base64.StdEncoding.DecodeString(secret)
	if err1 != nil || err2 != nil || len(id) != len(k.ID) || len(sec) != len(k.Secret) {
		return k, errors.New("malformed ticket key")
	}
	copy(k.ID[:], id)
	copy(k.Secret[:], sec)
	return k, nil
}
