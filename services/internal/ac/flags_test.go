package ac

import (
	"testing"
	"time"

	"github.com/darktower/delivery/services/internal/flags"
	"github.com/golang-jwt/jwt/v5"
)

// TestTokenLifetimeFollowsTheFlagAtEachIssue: with the flag at its static
// default the lifetime is AC_TOKEN_TTL (here 10 min, as before flags);
// once ac.token.ttl_seconds has a value (applied to AC's flag client as
// the gateway pushes it) the next token lives that long; a deleted key
// brings AC_TOKEN_TTL back. Without a gateway configured readiness has no flags entry.
func TestTokenLifetimeFollowsTheFlagAtEachIssue(t *testing.T) {
	a := startAC(t, newDatabase(t), masterKey)
	a.waitReady(t)
	lifetime := func() time.Duration {
		t.Helper()
		tok, err := a.tokenClient("meeting-controller", clientSecret, "global-controller").Token(a.ctx())
		if err != nil {
			t.Fatal(err)
		}
		var c jwt.RegisteredClaims
		if _, _, err := jwt.NewParser().ParseUnverified(tok.AccessToken, &c); err != nil {
			t.Fatal(err)
		}
		return c.ExpiresAt.Sub(c.IssuedAt.Time)
	}
	if d := lifetime(); d != 10*time.Minute {
		t.Fatalf("lifetime with the flag at its default = %s, want AC_TOKEN_TTL 10m", d)
	}
	a.svc.flags.Apply(flags.Message{Type: flags.MsgUpdate, Revision: 7,
		Flags: []flags.Entry{{Name: flags.AcTokenTtlSeconds, Value: "120", ModRevision: 7}}})
	if d := lifetime(); d != 2*time.Minute {
		t.Fatalf("lifetime after ac.token.ttl_seconds=120 = %s, want 2m", d)
	}
	a.svc.flags.Apply(flags.Message{Type: flags.MsgUpdate, Revision: 8,
		Flags: []flags.Entry{{Name: flags.AcTokenTtlSeconds, Deleted: true, ModRevision: 8}}})
	if d := lifetime(); d != 10*time.Minute {
		t.Fatalf("lifetime after the key was deleted = %s, want AC_TOKEN_TTL 10m again", d)
	}
	if rep := a.readiness(); !rep.Ready {
		t.Fatalf("readiness = %+v; want ready", rep)
	} else if _, listed := rep.Components["flags"]; listed {
		t.Fatalf("readiness = %+v; want no flags entry (no gateway configured)", rep)
	}
}
