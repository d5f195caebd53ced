// Package wire holds the JSON bodies services exchange, so sender and
// receiver cannot drift apart.
package wire

import (
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"time"
)

var dnsLabel = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func httpsURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && u.Scheme == "https" && u.Host != ""
}

// MCRegistration is what an MC sends GC on register and every heartbeat.
type MCRegistration struct {
	ID       string `json:"id"`
	Endpoint string `json:"endpoint"`
	Region   string `json:"region"`
}

// Validate checks the fields.
func (r MCRegistration) Validate() error {
	if !dnsLabel.MatchString(r.ID) {
		return errors.New("id must be a DNS label (lowercase letters, digits, '-', at most 63)")
	}
	if !dnsLabel.MatchString(r.Region) {
		return errors.New("region must be a DNS label")
	}
	if !httpsURL(r.Endpoint) {
		return errors.New("endpoint must be an absolute https:// URL")
	}
	return nil
}

// MeetingController is a GC registry entry as listed.
type MeetingController struct {
	MCRegistration
	RegisteredAt  time.Time `json:"registered_at"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
}

// MHRegistration is what an MH sends MC on register and every heartbeat.
type MHRegistration struct {
	ID          string  `json:"id"`
	MediaAddr   string  `json:"media_addr"`
	Endpoint    string  `json:"endpoint"`
	Utilization float64 `json:"utilization"`
	Admitting   bool    `json:"admitting"`
}

// Validate checks the fields.
func (m MHRegistration) Validate() error {
	if !dnsLabel.MatchString(m.ID) {
		return errors.New("id must be a DNS label (lowercase letters, digits, '-', at most 63)")
	}
	host, port, err := net.SplitHostPort(m.MediaAddr)
	if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
		return errors.New("media_addr must be host:port")
	}
	if !httpsURL(m.Endpoint) {
		return errors.New("endpoint must be an absolute https:// URL")
	}
	if m.Utilization < 0 || m.Utilization > 100 {
		return errors.New("utilization must be a ratio between 0 and 100")
	}
	return nil
}

// MHRegistrationReply is MC's answer to a registration or heartbeat: it
// hands the MH the key MC signs media join tickets with.
type MHRegistrationReply struct {
	ID                  string    `json:"id"`
	HeartbeatIntervalMS int64     `json:"heartbeat_interval_ms"`
	TicketKey           TicketKey `json:"ticket_key"`
}

// TicketKey is an HMAC-SHA256 ticket key: id (16 hex digits) and secret
// (32 bytes, base64).
type TicketKey struct {
	KeyID  string `json:"kid"`
	Secret string `json:"secret"`
}

// MediaTicketRequest asks MC for a media join ticket.
type MediaTicketRequest struct {
	SessionID     string `json:"session_id"`
	ParticipantID string `json:"participant_id"`
}

// MediaTicket is MC's answer: where to send media and the ticket to join with.
type MediaTicket struct {
	Ticket       string    `json:"ticket"` // base64url (no padding) of the binary ticket
	MediaHandler string    `json:"media_handler"`
	MediaAddr    string    `json:"media_addr"`
	ExpiresAt    time.Time `json:"expires_at"`
}

// WriteJSON answers with v as JSON.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
