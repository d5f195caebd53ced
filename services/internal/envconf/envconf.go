// Package envconf reads service configuration from environment variables.
//
// Every accessor records a problem instead of failing at once, so a service
// can report every missing or malformed variable in one start attempt; each
// problem is one line naming the variable and what is expected.
package envconf

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Secret holds a sensitive value. It never prints itself: fmt, slog and
// encoding/json all see a redaction marker.
type Secret struct{ value string }

// NewSecret wraps a sensitive value.
func NewSecret(v string) Secret { return Secret{value: v} }

// Reveal returns the secret value; call it only where the value is used.
func (s Secret) Reveal() string { return s.value }

// IsZero reports whether no value is set.
func (s Secret) IsZero() bool { return s.value == "" }

const redacted = "[REDACTED]"

func (s Secret) String() string               { return redacted }
func (s Secret) GoString() string             { return redacted }
func (s Secret) LogValue() slog.Value         { return slog.StringValue(redacted) }
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// Loader reads variables through a lookup function (os.LookupEnv by default)
// and accumulates problems.
type Loader struct {
	lookup   func(string) (string, bool)
	problems []string
}

// New returns a Loader over the process environment.
func New() *Loader { return &Loader{lookup: os.LookupEnv} }

// FromMap returns a Loader over a fixed set of variables (tests, tools).
func FromMap(m map[string]string) *Loader {
	return &Loader{lookup: func(k string) (string, bool) { v, ok := m[k]; return v, ok }}
}

// Err returns every recorded problem, one per line, or nil.
func (l *Loader) Err() error {
	if len(l.problems) == 0 {
		return nil
	}
	return errors.New(strings.Join(l.problems, "\n"))
}

// Problemf records a problem found by cross-field validation.
func (l *Loader) Problemf(format string, args ...any) {
	l.problems = append(l.problems, fmt.Sprintf(format, args...))
}

func (l *Loader) raw(name string) (string, bool) {
	v, ok := l.lookup(name)
	if !ok {
		return "", false
	}
	v = strings.TrimSpace(v)
	return v, v != ""
}

func (l *Loader) missing(name, expect string) {
	l.Problemf("%s is required: %s", name, expect)
}

func (l *Loader) malformed(name, expect string) {
	// The value itself is not echoed: it may be a secret.
	l.Problemf("%s is malformed: expected %s", name, expect)
}

// String returns the variable or def when unset.
func (l *Loader) String(name, def string) string {
	if v, ok := l.raw(name); ok {
		return v
	}
	return def
}

// List returns the variable (def when unset) split at commas and spaces,
// empty items dropped: "a, b c" is [a b c].
func (l *Loader) List(name, def string) []string {
	return strings.FieldsFunc(l.String(name, def), func(r rune) bool { return r == ',' || r == ' ' })
}

// RequiredString returns the variable or records that it is missing.
func (l *Loader) RequiredString(name, expect string) string {
	v, ok := l.raw(name)
	if !ok {
		l.missing(name, expect)
	}
	return v
}

// RequiredSecret is RequiredString for sensitive values.
func (l *Loader) RequiredSecret(name, expect string) Secret {
	return NewSecret(l.RequiredString(name, expect))
}

// Duration parses a Go duration ("5s", "1m30s") that must lie in [lo, hi].
func (l *Loader) Duration(name string, def, lo, hi time.Duration) time.Duration {
	v, ok := l.raw(name)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < lo || d > hi {
		l.malformed(name, fmt.Sprintf("a duration between %s and %s, e.g. %s", lo, hi, def))
		return def
	}
	return d
}

// Int parses an integer that must lie in [lo, hi].
func (l *Loader) Int(name string, def, lo, hi int) int {
	v, ok := l.raw(name)
	if !ok {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		l.malformed(name, fmt.Sprintf("an integer between %d and %d", lo, hi))
		return def
	}
	return n
}

// Float parses a number that must lie in [lo, hi].
func (l *Loader) Float(name string, def, lo, hi float64) float64 {
	v, ok := l.raw(name)
	if !ok {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f < lo || f > hi {
		l.malformed(name, fmt.Sprintf("a number between %g and %g", lo, hi))
		return def
	}
	return f
}

// Bool parses true/false (and the strconv spellings).
func (l *Loader) Bool(name string, def bool) bool {
	v, ok := l.raw(name)
	if !ok {
		return def
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		l.malformed(name, "true or false")
		return def
	}
	return b
}

// Addr parses a listen address "host:port" or ":port".
func (l *Loader) Addr(name, def string) string {
	v, ok := l.raw(name)
	if !ok {
		return def
	}
	if _, port, err := net.SplitHostPort(v); err != nil || !validPort(port) {
		l.malformed(name, `a listen address "host:port" or ":port", e.g. `+def)
		return def
	}
	return v
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 0 && n <= 65535
}

// HTTPSURL parses a required absolute https:// URL ("" when missing or malformed).
func (l *Loader) HTTPSURL(name, expect string) string {
	v, ok := l.raw(name)
	if !ok {
		l.missing(name, expect)
		return ""
	}
	u, err := url.Parse(v)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		l.malformed(name, "an absolute https:// URL: "+expect)
		return ""
	}
	return u.String()
}

// OptionalURL parses an optional absolute URL whose scheme must be scheme
// ("" when unset or malformed).
func (l *Loader) OptionalURL(name, scheme, expect string) string {
	v, ok := l.raw(name)
	if !ok {
		return ""
	}
	u, err := url.Parse(v)
	if err != nil || u.Scheme != scheme || u.Host == "" {
		l.malformed(name, "an absolute "+scheme+":// URL: "+expect)
		return ""
	}
	return u.String()
}

// Base64Key decodes a required standard-base64 value of exactly n bytes.
func (l *Loader) Base64Key(name string, n int) Secret {
	expect := fmt.Sprintf("%d random bytes, base64-encoded (e.g. `openssl rand -base64 %d`)", n, n)
	v, ok := l.raw(name)
	if !ok {
		l.missing(name, expect)
		return Secret{}
	}
	b, err := base64.StdEncoding.DecodeString(v)
	if err != nil || len(b) != n {
		l.malformed(name, expect)
		return Secret{}
	}
	return NewSecret(string(b))
}

// OptionalBase64Key is Base64Key for a variable that may be unset (then
// the zero Secret, whose Reveal is empty).
func (l *Loader) OptionalBase64Key(name string, n int) Secret {
	if _, ok := l.raw(name); !ok {
		return Secret{}
	}
	return l.Base64Key(name, n)
}

// File requires the variable to name a readable file.
func (l *Loader) File(name, expect string) string {
	v, ok := l.raw(name)
	if !ok {
		l.missing(name, expect)
		return ""
	}
	return l.checkFile(name, v)
}

// OptionalFile is File for an optional variable ("" when unset).
func (l *Loader) OptionalFile(name, expect string) string {
	v, ok := l.raw(name)
	if !ok {
		return ""
	}
	return l.checkFile(name, v)
}

func (l *Loader) checkFile(name, path string) string {
	st, err := os.Stat(path)
	switch {
	case err != nil:
		l.Problemf("%s names %q, which cannot be read: %v", name, path, errors.Unwrap(err))
	case st.IsDir():
		l.Problemf("%s names %q, which is a directory: expected a file", name, path)
	}
	return path
}
