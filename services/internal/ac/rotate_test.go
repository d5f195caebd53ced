package ac

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/services/internal/authn"
	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/golang-jwt/jwt/v5"
)

func (a *runningAC) jwksKids(t *testing.T) []string {
	resp, err := a.api.Client().Get(a.api.URL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var set authn.JWKS
	_ = json.NewDecoder(resp.Body).Decode(&set)
	var kids []string
	for _, k := range set.Keys {
		kids = append(kids, k.Kid)
	}
	return kids
}

func (a *runningAC) tokenKid(t *testing.T) (string, string) {
	tok, err := a.tokenClient("meeting-controller", clientSecret, "global-controller").Token(a.ctx())
	if err != nil {
		t.Fatal(err)
	}
	p, _, err := jwt.NewParser().ParseUnverified(tok.AccessToken, &jwt.RegisteredClaims{})
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := p.Header["kid"].(string)
	return kid, tok.AccessToken
}

// Finding 8: a rotation publishes the next key on every replica before any
// signs with it, then signs with it, and retires the old key only after
// the tokens it signed have expired (here: a shortened RetireAfter).
func TestKeyRotationAcrossReplicas(t *testing.T) {
	dbURL := newDatabase(t)
	fast := func(c *Config) { c.KeyReload = time.Second }
	a, b := startAC(t, dbURL, masterKey, fast), startAC(t, dbURL, masterKey, fast)
	a.waitReady(t)
	b.waitReady(t)
	for _, r := range []*runningAC{a, b} {
		r.svc.store.RetireAfter = 3 * time.Second
	}
	k1, tok1 := a.tokenKid(t)
	verifier := &authn.Verifier{Issuer: "https://ac-service", Audience: "global-controller",
		Keys: &authn.KeySet{URL: b.api.URL + "/.well-known/jwks.json", Client: b.api.Client()}}
	ctx := context.Background()

	k2, at, err := a.svc.store.Rotate(ctx, 2500*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.svc.store.Rotate(ctx, time.Second); err != ErrRotationPending {
		t.Fatalf("second rotation while one is pending: %v", err)
	}
	var published, signing, retired time.Time
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && retired.IsZero(); time.Sleep(100 * time.Millisecond) {
		ka, kb := a.jwksKids(t), b.jwksKids(t)
		if published.IsZero() && slices.Contains(ka, k2) && slices.Contains(kb, k2) {
			published = time.Now()
		}
		sa, _ := a.tokenKid(t)
		sb, _ := b.tokenKid(t)
		if sa == k2 || sb == k2 {
			if published.IsZero() {
				t.Fatalf("a replica signed with %s before every replica published it", k2)
			}
			if signing.IsZero() {
				signing = time.Now()
				if signing.Before(at) {
					t.Fatalf("signing with the next key at %s, before its activation at %s", signing, at)
				}
			}
		}
		if !signing.IsZero() && sa == k2 && sb == k2 && retired.IsZero() {
			// The old key is still published while it may have live tokens.
			if !slices.Contains(ka, k1) && !slices.Contains(kb, k1) && time.Since(signing) < time.Second {
				t.Fatal("old key withdrawn at once")
			}
			if !slices.Contains(ka, k1) && !slices.Contains(kb, k1) {
				retired = time.Now()
			}
		}
		if !signing.IsZero() && retired.IsZero() {
			if _, err := verifier.Verify(ctx, tok1); err != nil {
				t.Fatalf("a token signed by the old key stopped verifying before retirement: %v", err)
			}
		}
	}
	if published.IsZero() || signing.IsZero() || retired.IsZero() {
		t.Fatalf("rotation incomplete: published %v, signing %v, retired %v", published, signing, retired)
	}
	t.Logf("FIGURE key rotation (AC_KEY_RELOAD 1s, lead 2.5s, retire after 3s): next key published on both replicas %s before it signed; old key withdrawn %s after the switch",
		signing.Sub(published).Round(time.Millisecond), retired.Sub(signing).Round(time.Millisecond))
	var active int
	if err := a.svc.pool.QueryRow(ctx, `SELECT count(*) FROM signing_keys WHERE active`).Scan(&active); err != nil || active != 1 {
		t.Fatalf("%d active keys (%v)", active, err)
	}

	// The command: a rotation, then a refusal while it is pending; a wrong
	// master key or missing configuration is refused.
	env := map[string]string{"AC_DATABASE_URL": dbURL, "AC_MASTER_KEY": base64.StdEncoding.EncodeToString([]byte(masterKey.Reveal())),
		"AC_KEY_RELOAD": "1s"}
	var out, errOut bytes.Buffer
	if rc := RotateKeyMain(envconf.FromMap(env), &out, &errOut); rc != 0 {
		t.Fatalf("rotate-key = %d: %s", rc, errOut.String())
	}
	var res struct {
		Kid         string `json:"kid"`
		ActivatesAt string `json:"activates_at"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || res.Kid == "" || res.Kid == k2 {
		t.Fatalf("rotate-key printed %q", out.String())
	}
	if rc := RotateKeyMain(envconf.FromMap(env), &out, &errOut); rc != 1 || !strings.Contains(errOut.String(), "already pending") {
		t.Fatalf("second rotate-key = %d: %s", rc, errOut.String())
	}
	wrong := maps(env, "AC_MASTER_KEY", base64.StdEncoding.EncodeToString([]byte("ffffffffffffffffffffffffffffffff")))
	errOut.Reset()
	if rc := RotateKeyMain(envconf.FromMap(wrong), &out, &errOut); rc != 1 || !strings.Contains(errOut.String(), "cannot be unsealed") {
		t.Fatalf("rotate-key with a wrong master key = %d: %s", rc, errOut.String())
	}
	errOut.Reset()
	if rc := RotateKeyMain(envconf.FromMap(map[string]string{}), &out, &errOut); rc != 2 || !strings.Contains(errOut.String(), "AC_DATABASE_URL") {
		t.Fatalf("rotate-key without configuration = %d: %s", rc, errOut.String())
	}
	if strings.Contains(errOut.String()+out.String(), masterKey.Reveal()) || strings.Contains(errOut.String(), pg.Password) {
		t.Fatal("rotate-key printed a secret")
	}
}

func maps(m map[string]string, k, v string) map[string]string {
	c := map[string]string{k: v}
	for kk, vv := range m {
		if kk != k {
			c[kk] = vv
		}
	}
	return c
}

// The master key carries a version: a replica started with version 2 and
// the version 1 key as AC_MASTER_KEY_PREVIOUS re-seals the keys, after which
// version 2 alone suffices and the old master key no longer opens them.
func TestMasterKeyRotationByResealing(t *testing.T) {
	dbURL := newDatabase(t)
	a := startAC(t, dbURL, masterKey)
	a.waitReady(t)
	kid := a.svc.currentSigner().KeyID
	newMaster := envconf.NewSecret("NEW-master-key-0123456789abcdef!")
	v2 := func(prev envconf.Secret) func(*Config) {
		return func(c *Config) { c.MasterVer, c.MasterPrev = 2, prev }
	}
	b := startAC(t, dbURL, newMaster, v2(masterKey))
	b.waitReady(t)
	if got := b.svc.currentSigner().KeyID; got != kid {
		t.Fatalf("re-sealing replica signs with %s, want the existing %s", got, kid)
	}
	var version int
	if err := b.svc.pool.QueryRow(context.Background(), `SELECT master_version FROM signing_keys WHERE kid = $1`, kid).Scan(&version); err != nil || version != 2 {
		t.Fatalf("master_version = %d (%v), want 2", version, err)
	}
	c := startAC(t, dbURL, newMaster, v2(envconf.Secret{}))
	c.waitReady(t)
	if c.svc.currentSigner().KeyID != kid {
		t.Fatal("version 2 alone does not open the re-sealed key")
	}
	d := startAC(t, dbURL, masterKey)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(d.logs.String(), "master key version 2") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if rep := d.readiness(); rep.Ready || !strings.Contains(d.logs.String(), "AC_MASTER_KEY_VERSION") {
		t.Fatalf("the version 1 master key after re-sealing: ready=%v\n%s", rep.Ready, d.logs)
	}
	for _, r := range []*runningAC{a, b, c, d} {
		for _, secret := range []string{masterKey.Reveal(), newMaster.Reveal()} {
			if strings.Contains(r.logs.String(), secret) {
				t.Fatal("a master key was logged")
			}
		}
	}
}
