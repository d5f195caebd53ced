package ac

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"regexp"

	"golang.org/x/crypto/bcrypt"
)

// Client is one service client allowed the client-credentials grant.
type Client struct {
	ID           string   `json:"id"`
	SecretBcrypt string   `json:"secret_bcrypt"`
	Audiences    []string `json:"audiences"`
	// Instances are the registry ids (MC ids at GC, MH ids at MC) this
	// client may register and heartbeat: exact ids or a prefix ending in
	// "*". Carried in its tokens; empty: it may register none.
	Instances []string `json:"instances,omitempty"`
}

// ClientsFile is the mounted credentials file (AC_CLIENTS_FILE):
//
//	{"clients": [{"id": "meeting-controller", "secret_bcrypt": "$2a$10$...",
//	              "audiences": ["global-controller"], "instances": ["meeting-controller-*"]}]}
type ClientsFile struct {
	Clients []Client `json:"clients"`
}

var (
	idPattern       = regexp.MustCompile(`^[a-z0-9][a-z0-9.-]{0,62}$`)
	instancePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$|^[a-z0-9][a-z0-9-]{0,61}\*$`)
)

// LoadClients reads and validates the credentials file strictly: unknown
// fields, duplicate IDs, secrets that are not bcrypt hashes and clients
// without audiences are errors.
func LoadClients(path string) (map[string]Client, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("AC_CLIENTS_FILE: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	var f ClientsFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("AC_CLIENTS_FILE %s: %w", path, err)
	}
	clients := make(map[string]Client, len(f.Clients))
	for i, c := range f.Clients {
		where := fmt.Sprintf("AC_CLIENTS_FILE %s: client %d (%q)", path, i, c.ID)
		if !idPattern.MatchString(c.ID) {
			return nil, fmt.Errorf("%s: id must match %s", where, idPattern)
		}
		if _, dup := clients[c.ID]; dup {
			return nil, fmt.Errorf("%s: duplicate id", where)
		}
		if _, err := bcrypt.Cost([]byte(c.SecretBcrypt)); err != nil {
			return nil, fmt.Errorf("%s: secret_bcrypt is not a bcrypt hash (make one with `htpasswd -bnBC 10 \"\" SECRET | tr -d ':\\n'`)", where)
		}
		if len(c.Audiences) == 0 {
			return nil, fmt.Errorf("%s: audiences is empty", where)
		}
		for _, in := range c.Instances {
			if !instancePattern.MatchString(in) {
				return nil, fmt.Errorf("%s: instance %q is neither a DNS label nor a DNS-label prefix ending in *", where, in)
			}
		}
		clients[c.ID] = c
	}
	if len(clients) == 0 {
		return nil, fmt.Errorf("AC_CLIENTS_FILE %s defines no clients", path)
	}
	return clients, nil
}
