package ac

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/darktower/delivery/services/internal/authn"
	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/darktower/delivery/services/internal/opskit"
	"github.com/darktower/delivery/services/internal/testenv"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

var pg *testenv.Postgres

func TestMain(m *testing.M) {
	testenv.MainWith(m, testenv.StartPostgres, func(s *testenv.Postgres) { pg = s })
}

const clientSecret = "mc-client-secret-value"

var dbCounter struct {
	sync.Mutex
	n int
}

func newDatabase(t *testing.T) string {
	dbCounter.Lock()
	dbCounter.n++
	name := fmt.Sprintf("ac_%s_%d", strings.ToLower(strings.NewReplacer("/", "_", "-", "_").Replace(t.Name())), dbCounter.n)
	dbCounter.Unlock()
	u, err := pg.CreateDatabase(name)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func writeClients(t *testing.T) string {
	hash, err := bcrypt.GenerateFromPassword([]byte(clientSecret), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	f := ClientsFile{Clients: []Client{
		{ID: "meeting-controller", SecretBcrypt: string(hash), Audiences: []string{"global-controller"}, Instances: []string{"meeting-controller-*", "mc-e2e"}},
		{ID: "ops-tool", SecretBcrypt: string(hash), Audiences: []string{"global-controller", "meeting-controller"}},
	}}
	b, _ := json.Marshal(f)
	path := filepath.Join(t.TempDir(), "clients.json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

var masterKey = envconf.NewSecret("0123456789abcdef0123456789abcdef")

type runningAC struct {
	svc  *Service
	kit  *opskit.Kit
	logs *testenv.SyncBuffer
	api  *httptest.Server
	rdy  *opskit.Readiness
}

// testGuard is generous: tests that do not exercise the limits are not
// slowed by them.
var testGuard = GuardConfig{Concurrency: 4, ConcurrencySource: 4, QueueWait: 5 * time.Second,
	SourceRate: 1000, ClientRate: 1000, FailureLogEvery: time.Second}

func startAC(t *testing.T, dbURL string, master envconf.Secret, opts ...func(*Config)) *runningAC {
	t.Helper()
	kit, logs := testenv.Kit(t, "ac-service", "")
	cfg := Config{DatabaseURL: envconf.NewSecret(dbURL), MasterKey: master,
		ClientsFile: writeClients(t), Issuer: "https://ac-service", TokenTTL: 10 * time.Minute,
		KeyReload: time.Minute, DBMaxConns: 4, Guard: testGuard}
	for _, o := range opts {
		o(&cfg)
	}
	svc, err := NewService(kit, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = svc.Run(ctx); close(done) }()
	mux := opskit.NewMux()
	svc.Routes(mux)
	api := httptest.NewTLSServer(mux)
	t.Cleanup(func() { api.Close(); cancel(); <-done; svc.Close() })
	return &runningAC{svc: svc, kit: kit, logs: logs, api: api, rdy: opskit.NewReadiness(kit.Registry, time.Second, svc.Checks())}
}

func (a *runningAC) readiness() opskit.Report {
	return a.rdy.Evaluate(context.Background())
}

// waitReady polls the service's own readiness checks.
func (a *runningAC) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if a.readiness().Ready {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("AC never became ready: %+v\nlogs:\n%s", a.readiness(), a.logs)
}

func (a *runningAC) tokenClient(id, secret, audience string) *clientcredentials.Config {
	return &clientcredentials.Config{ClientID: id, ClientSecret: secret, TokenURL: a.api.URL + "/v1/oauth/token",
		EndpointParams: url.Values{"audience": {audience}}, AuthStyle: oauth2.AuthStyleInHeader}
}

func (a *runningAC) ctx() context.Context {
	return context.WithValue(context.Background(), oauth2.HTTPClient, a.api.Client())
}

func TestTokenIsVerifiableAgainstPublishedJWKS(t *testing.T) {
	a := startAC(t, newDatabase(t), masterKey)
	a.waitReady(t)
	tok, err := a.tokenClient("meeting-controller", clientSecret, "global-controller").Token(a.ctx())
	if err != nil {
		t.Fatal(err)
	}
	if tok.TokenType != "Bearer" || time.Until(tok.Expiry) > authn.MaxTokenTTL {
		t.Fatalf("token = %+v", tok)
	}
	v := &authn.Verifier{Issuer: "https://ac-service", Audience: "global-controller",
		Keys: &authn.KeySet{URL: a.api.URL + "/.well-known/jwks.json", Client: a.api.Client()}}
	claims, err := v.Verify(context.Background(), tok.AccessToken)
	if err != nil {
		t.Fatalf("AC's token does not verify against AC's JWKS: %v", err)
	}
	if claims.Subject != "meeting-controller" || !slices.Equal(claims.Instances, []string{"meeting-controller-*", "mc-e2e"}) {
		t.Fatalf("sub = %q, instances = %q", claims.Subject, claims.Instances)
	}
	if !claims.OwnsInstance("meeting-controller-7d9f-x2x") || !claims.OwnsInstance("mc-e2e") || claims.OwnsInstance("mc-other") {
		t.Fatal("instances claim does not grant what the clients file says")
	}
	// A client with one audience may omit it.
	implicit := a.tokenClient("meeting-controller", clientSecret, "")
	implicit.EndpointParams = nil
	if _, err := implicit.Token(a.ctx()); err != nil {
		t.Fatalf("single-audience client without audience refused: %v", err)
	}
	for _, leaked := range []string{clientSecret, "0123456789abcdef0123456789abcdef", pg.Password, tok.AccessToken} {
		if strings.Contains(a.logs.String(), leaked) {
			t.Errorf("logs contain a secret (%.6s…)", leaked)
		}
	}
}

func TestTokenEndpointRefusals(t *testing.T) {
	a := startAC(t, newDatabase(t), masterKey)
	a.waitReady(t)
	post := func(user, pass string, form url.Values) (int, string) {
		req, _ := http.NewRequest("POST", a.api.URL+"/v1/oauth/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if user != "" {
			req.SetBasicAuth(user, pass)
		}
		resp, err := a.api.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body["error"]
	}
	cc := url.Values{"grant_type": {"client_credentials"}}
	for name, c := range map[string]struct {
		user, pass string
		form       url.Values
		code       int
		oauthErr   string
	}{
		"wrong secret":        {"meeting-controller", "nope", cc, 401, "invalid_client"},
		"unknown client":      {"intruder", clientSecret, cc, 401, "invalid_client"},
		"no client auth":      {"", "", cc, 401, "invalid_client"},
		"password grant":      {"meeting-controller", clientSecret, url.Values{"grant_type": {"password"}}, 400, "unsupported_grant_type"},
		"audience not listed": {"meeting-controller", clientSecret, url.Values{"grant_type": {"client_credentials"}, "audience": {"ac-service"}}, 400, "invalid_target"},
		"ambiguous audience":  {"ops-tool", clientSecret, cc, 400, "invalid_target"},
	} {
		if code, e := post(c.user, c.pass, c.form); code != c.code || e != c.oauthErr {
			t.Errorf("%s: %d %q, want %d %q", name, code, e, c.code, c.oauthErr)
		}
	}
}

func TestActiveKeyIsCreatedOnceSealedAndSharedByReplicas(t *testing.T) {
	dbURL := newDatabase(t)
	// Two replicas start against an empty database at the same time.
	a, b := startAC(t, dbURL, masterKey), startAC(t, dbURL, masterKey)
	a.waitReady(t)
	b.waitReady(t)
	if ka, kb := a.svc.currentSigner().KeyID, b.svc.currentSigner().KeyID; ka != kb {
		t.Fatalf("replicas use different active keys %s and %s", ka, kb)
	}
	ctx := context.Background()
	var n int
	var sealed []byte
	if err := a.svc.pool.QueryRow(ctx, `SELECT count(*) FROM signing_keys`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if err := a.svc.pool.QueryRow(ctx, `SELECT sealed_private FROM signing_keys`).Scan(&sealed); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d keys in the table, want exactly 1", n)
	}
	seed := a.svc.currentSigner().Key.Seed()
	if strings.Contains(string(sealed), string(seed)) {
		t.Fatal("private key stored in the clear")
	}
	// Migrations are idempotent.
	if err := a.svc.store.Migrate(ctx); err != nil {
		t.Fatalf("second migration: %v", err)
	}
	// A restart with another master key cannot unseal: not ready, and says why.
	c := startAC(t, dbURL, envconf.NewSecret("ffffffffffffffffffffffffffffffff"))
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(c.logs.String(), "cannot be unsealed") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if rep := c.readiness(); rep.Ready || rep.Components["signing_key"] || !rep.Components["database"] {
		t.Fatalf("AC with the wrong master key: %+v", rep)
	}
	if !strings.Contains(c.logs.String(), "AC_MASTER_KEY") {
		t.Fatalf("logs do not point at AC_MASTER_KEY:\n%s", c.logs)
	}
}

func TestNotReadyWithoutDatabase(t *testing.T) {
	port, _ := testenv.FreePort()
	a := startAC(t, fmt.Sprintf("postgres://ac:pw@127.0.0.1:%d/ac", port), masterKey)
	if rep := a.readiness(); rep.Ready || rep.Components["database"] || rep.Components["signing_key"] {
		t.Fatalf("readiness without a database = %+v", rep)
	}
	resp, err := a.api.Client().Get(a.api.URL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("JWKS before keys loaded = %d, want 503", resp.StatusCode)
	}
}

func TestLoadClientsRejectsBadFiles(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"unknown field": `{"clients":[{"id":"a","secret":"plain","audiences":["x"]}]}`,
		"plain secret":  `{"clients":[{"id":"a","secret_bcrypt":"plain","audiences":["x"]}]}`,
		"no audiences":  `{"clients":[{"id":"a","secret_bcrypt":"$2a$04$abcdefghijklmnopqrstuu5Jm1lOv3ec2n0vJ0Sj7eCg2Jm2QZZm6","audiences":[]}]}`,
		"empty":         `{"clients":[]}`,
		"bad id":        `{"clients":[{"id":"A B","secret_bcrypt":"x","audiences":["x"]}]}`,
		"bad instance":  `{"clients":[{"id":"a","secret_bcrypt":"$2a$04$abcdefghijklmnopqrstuu5Jm1lOv3ec2n0vJ0Sj7eCg2Jm2QZZm6","audiences":["x"],"instances":["*"]}]}`,
		"star inside":   `{"clients":[{"id":"a","secret_bcrypt":"$2a$04$abcdefghijklmnopqrstuu5Jm1lOv3ec2n0vJ0Sj7eCg2Jm2QZZm6","audiences":["x"],"instances":["mc-*-x"]}]}`,
	} {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		_ = os.WriteFile(p, []byte(body), 0o600)
		if _, err := LoadClients(p); err == nil || !strings.Contains(err.Error(), "AC_CLIENTS_FILE") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

// Graceful degradation: once its keys are loaded AC issues tokens and
// serves its JWKS without the database, and stays ready (the database is
// reported unhealthy, for information).
func TestServesTokensThroughADatabaseOutage(t *testing.T) {
	own, err := testenv.StartPostgres()
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		if !stopped {
			own.Stop()
		}
	}()
	dbURL, err := own.CreateDatabase("ac")
	if err != nil {
		t.Fatal(err)
	}
	a := startAC(t, dbURL, masterKey)
	a.waitReady(t)
	own.Stop()
	stopped = true
	rep := a.readiness()
	if !rep.Ready || rep.Components["database"] || !rep.Components["signing_key"] {
		t.Fatalf("with the database gone: %+v, want ready with database unhealthy", rep)
	}
	if _, err := a.tokenClient("meeting-controller", clientSecret, "global-controller").Token(a.ctx()); err != nil {
		t.Fatalf("no token without the database: %v", err)
	}
	resp, err := a.api.Client().Get(a.api.URL + "/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("JWKS = %d without the database", resp.StatusCode)
	}
}
