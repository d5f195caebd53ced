package envconf

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMissingAndMalformedValuesNameTheVariable(t *testing.T) {
	l := FromMap(map[string]string{
		"TIMEOUT": "ten seconds",
		"PORT":    "99999",
		"KEY":     "c2hvcnQ=", // "short": not 32 bytes
		"FLAG":    "maybe",
		"URL":     "http://plain.example",
		"ADDR":    "nope",
	})
	l.RequiredString("NEEDED", "a thing")
	l.Duration("TIMEOUT", time.Second, 0, time.Minute)
	l.Int("PORT", 1, 1, 65535)
	l.Base64Key("KEY", 32)
	l.Bool("FLAG", false)
	l.HTTPSURL("URL", "an https URL")
	l.Addr("ADDR", ":80")
	l.File("CERT", "a certificate")
	err := l.Err()
	if err == nil {
		t.Fatal("expected problems")
	}
	lines := strings.Split(err.Error(), "\n")
	want := []string{"NEEDED is required", "TIMEOUT is malformed", "PORT is malformed", "KEY is malformed",
		"FLAG is malformed", "URL is malformed", "ADDR is malformed", "CERT is required"}
	if len(lines) != len(want) {
		t.Fatalf("got %d problem lines, want %d:\n%s", len(lines), len(want), err)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q, want prefix %q", i, lines[i], w)
		}
	}
	if strings.Contains(err.Error(), "c2hvcnQ=") {
		t.Error("a malformed value was echoed back; it may be a secret")
	}
}

func TestValidValuesParse(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "f")
	if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	l := FromMap(map[string]string{
		"D": "1m30s", "N": "7", "B": "true", "U": "https://ac-service/jwks", "A": "127.0.0.1:8080",
		"K": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", "F": f, "X": " 2.5 ",
	})
	if d := l.Duration("D", 0, 0, time.Hour); d != 90*time.Second {
		t.Errorf("duration = %s", d)
	}
	if n := l.Int("N", 0, 0, 10); n != 7 {
		t.Errorf("int = %d", n)
	}
	if !l.Bool("B", false) {
		t.Error("bool")
	}
	if u := l.HTTPSURL("U", ""); u != "https://ac-service/jwks" {
		t.Errorf("url = %v", u)
	}
	if a := l.Addr("A", ""); a != "127.0.0.1:8080" {
		t.Errorf("addr = %q", a)
	}
	if k := l.Base64Key("K", 32); len(k.Reveal()) != 32 || k.Reveal()[31] != 31 {
		t.Error("base64 key not decoded")
	}
	if l.File("F", "") != f {
		t.Error("file")
	}
	if x := l.Float("X", 0, 0, 10); x != 2.5 {
		t.Errorf("float = %g", x)
	}
	if got := FromMap(map[string]string{"L": " a, b c,,"}).List("L", "x"); strings.Join(got, "|") != "a|b|c" {
		t.Errorf("list = %q", got)
	}
	if got := l.List("UNSET", "x,y"); strings.Join(got, "|") != "x|y" {
		t.Errorf("list default = %q", got)
	}
	if l.String("UNSET", "def") != "def" || l.Duration("UNSET", time.Second, 0, time.Hour) != time.Second {
		t.Error("defaults not applied")
	}
	if err := l.Err(); err != nil {
		t.Fatalf("unexpected problems: %v", err)
	}
}

func TestDirectoryIsNotAFile(t *testing.T) {
	l := FromMap(map[string]string{"F": t.TempDir()})
	l.File("F", "a file")
	if err := l.Err(); err == nil || !strings.Contains(err.Error(), "is a directory") {
		t.Fatalf("err = %v", err)
	}
}

func TestSecretNeverPrints(t *testing.T) {
	const value = "hunter2-super-secret"
	cfg := struct {
		Name string
		Pass Secret
	}{"db", NewSecret(value)}
	var logs bytes.Buffer
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "cfg", cfg, "pass", cfg.Pass)
	js, _ := json.Marshal(cfg)
	outputs := []string{fmt.Sprint(cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), cfg.Pass.String(), string(js), logs.String()}
	for _, out := range outputs {
		if strings.Contains(out, value) {
			t.Errorf("secret leaked in %q", out)
		}
	}
	if cfg.Pass.Reveal() != value {
		t.Error("Reveal lost the value")
	}
}

func TestOptionalBase64Key(t *testing.T) {
	l := FromMap(map[string]string{"SET": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", "BAD": "c2hvcnQ="})
	if got := l.OptionalBase64Key("UNSET", 32); got.Reveal() != "" {
		t.Fatal("unset variable gave a key")
	}
	if got := l.OptionalBase64Key("SET", 32); got.Reveal() != "0123456789abcdef0123456789abcdef" {
		t.Fatal("set variable not decoded")
	}
	l.OptionalBase64Key("BAD", 32)
	if err := l.Err(); err == nil || !strings.Contains(err.Error(), "BAD is malformed") || strings.Contains(err.Error(), "c2hvcnQ") {
		t.Fatalf("err = %v", err)
	}
}

func TestOptionalURLIsEmptyWhenUnsetAndChecksTheScheme(t *testing.T) {
	l := FromMap(map[string]string{"GOOD": "wss://gw/v1/flags/watch", "PLAIN": "https://gw/v1/flags/watch", "NOHOST": "wss:///x"})
	if got := l.OptionalURL("UNSET", "wss", "x"); got != "" {
		t.Errorf("unset = %q", got)
	}
	if got := l.OptionalURL("GOOD", "wss", "x"); got != "wss://gw/v1/flags/watch" {
		t.Errorf("good = %q", got)
	}
	l.OptionalURL("PLAIN", "wss", "x")
	l.OptionalURL("NOHOST", "wss", "x")
	err := l.Err()
	if err == nil || !strings.Contains(err.Error(), "PLAIN is malformed: expected an absolute wss:// URL") || !strings.Contains(err.Error(), "NOHOST is malformed") {
		t.Fatalf("problems = %v", err)
	}
}
