package devsecrets

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
	"sigs.k8s.io/yaml"
)

func generate(t *testing.T) map[string]map[string]string {
	t.Helper()
	secrets, err := Generate(Options{Namespace: "dark-tower-local-secrets", ServiceNamespaces: []string{"region-us-west", "region-us-east"},
		DataNamespace: "dark-tower-data", Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]string{}
	for _, s := range secrets {
		if s.Metadata.Namespace != "dark-tower-local-secrets" || s.Kind != "Secret" {
			t.Fatalf("secret %s in %q, kind %s", s.Metadata.Name, s.Metadata.Namespace, s.Kind)
		}
		out[s.Metadata.Name] = s.StringData
	}
	return out
}

func parseCert(t *testing.T, p string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(p))
	if b == nil {
		t.Fatal("no PEM certificate")
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCertificatesChainToTheInternalCAForEveryName(t *testing.T) {
	s := generate(t)
	roots := x509.NewCertPool()
	roots.AddCert(parseCert(t, s["dark-tower-internal-ca"]["certificate"]))
	for _, svc := range Services {
		tls := s["dark-tower-"+svc+"-tls"]
		cert := parseCert(t, tls["certificate"])
		for _, name := range []string{svc, svc + ".region-us-west.svc", svc + ".region-us-east.svc.cluster.local"} {
			if _, err := cert.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				t.Errorf("%s as %s: %v", svc, name, err)
			}
		}
		if !strings.Contains(tls["private-key"], "BEGIN PRIVATE KEY") {
			t.Errorf("%s: no private key", svc)
		}
	}
	ac := parseCert(t, s["dark-tower-ac-service-tls"]["certificate"])
	if err := ac.VerifyHostname("ac-service-0.ac-service-headless.region-us-east.svc"); err != nil {
		t.Errorf("AC's StatefulSet pod name: %v", err)
	}
}

func TestClientsFileMatchesTheClientSecrets(t *testing.T) {
	s := generate(t)
	var file struct {
		Clients []struct {
			ID           string   `json:"id"`
			SecretBcrypt string   `json:"secret_bcrypt"`
			Audiences    []string `json:"audiences"`
			Instances    []string `json:"instances"`
		} `json:"clients"`
	}
	if err := json.Unmarshal([]byte(s["dark-tower-ac-service"]["clients-json"]), &file); err != nil {
		t.Fatal(err)
	}
	if len(file.Clients) != 3 {
		t.Fatalf("%d clients", len(file.Clients))
	}
	for _, c := range file.Clients {
		secret := s["dark-tower-"+c.ID]["client-secret"]
		if err := bcrypt.CompareHashAndPassword([]byte(c.SecretBcrypt), []byte(secret)); err != nil || secret == "" {
			t.Errorf("%s: hash does not match its secret: %v", c.ID, err)
		}
		if c.ID == "darktower-smoke" {
			// A client only: it registers nothing.
			if !slices.Equal(c.Audiences, []string{"global-controller", "meeting-controller"}) || len(c.Instances) != 0 {
				t.Errorf("%s: audiences %v, instances %v", c.ID, c.Audiences, c.Instances)
			}
			continue
		}
		if len(c.Audiences) != 1 {
			t.Errorf("%s: audiences %v", c.ID, c.Audiences)
		}
		// The pods register under their names (MC_ID/MH_ID = $(POD_NAME)).
		if len(c.Instances) != 1 || c.Instances[0] != c.ID+"-*" {
			t.Errorf("%s: instances %v, want [%s-*]", c.ID, c.Instances, c.ID)
		}
	}
	if key, err := base64.StdEncoding.DecodeString(s["dark-tower-ac-service"]["master-key"]); err != nil || len(key) != 32 {
		t.Errorf("master key: %d bytes, %v", len(key), err)
	}
}

func TestDatabaseURLsUseThePoolerWithVerifyFull(t *testing.T) {
	s := generate(t)
	for db, secret := range map[string]string{"ac": "dark-tower-ac-service", "gc": "dark-tower-global-controller"} {
		u, err := url.Parse(s[secret]["database-url"])
		if err != nil {
			t.Fatal(err)
		}
		pw, _ := u.User.Password()
		if u.Hostname() != "dark-tower-pg-pooler-rw.dark-tower-data.svc" || u.Query().Get("sslmode") != "verify-full" ||
			u.User.Username() != db || pw != s["dark-tower-postgresql-"+db]["password"] || u.Path != "/"+db {
			t.Errorf("%s URL does not match the role the database is created with", db)
		}
	}
}

func TestEachRunMakesNewSecretsAndTheManifestRoundTrips(t *testing.T) {
	a, b := generate(t), generate(t)
	if a["dark-tower-redis"]["password"] == b["dark-tower-redis"]["password"] {
		t.Fatal("two runs made the same password")
	}
	secrets, err := Generate(Options{Namespace: "ns", ServiceNamespaces: []string{"x"}, DataNamespace: "d"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := Manifest(secrets)
	if err != nil {
		t.Fatal(err)
	}
	docs := strings.Split(string(m), "\n---\n")
	if len(docs) != len(secrets) {
		t.Fatalf("%d documents for %d secrets", len(docs), len(secrets))
	}
	var back Secret
	if err := yaml.UnmarshalStrict([]byte(docs[0]), &back); err != nil || back.Metadata.Name != secrets[0].Metadata.Name {
		t.Fatalf("round trip: %v %+v", err, back.Metadata)
	}
	if _, err := Generate(Options{}); err == nil {
		t.Fatal("no namespaces accepted")
	}
}

func TestEnvFileHasEveryComposeVariable(t *testing.T) {
	secrets, err := Generate(Options{Namespace: "ns", ServiceNamespaces: []string{"x"}, DataNamespace: "d"})
	if err != nil {
		t.Fatal(err)
	}
	env, err := EnvFile(secrets)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range envKeys {
		if !strings.Contains(env, "\n"+k.env+"='") {
			t.Errorf("no %s in the env file", k.env)
		}
	}
	if strings.Count(env, "'") != 2*len(envKeys) {
		t.Errorf("quotes do not pair up: %d for %d values", strings.Count(env, "'"), len(envKeys))
	}
}

// Every remote key and property an ExternalSecret in infra/ reads is one
// dev-secrets makes: the local environment lacks no secret.
func TestEveryExternalSecretReadIsGenerated(t *testing.T) {
	s := generate(t)
	files := []string{
		"../../infra/platform/external-secrets/service-secrets/external-secrets.yaml",
		"../../infra/platform/database/external-secrets.yaml",
		"../../infra/platform/observability/external-secrets.yaml",
	}
	reads := 0
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range strings.Split(string(raw), "\n---\n") {
			var es struct {
				Spec struct {
					Data []struct {
						RemoteRef struct{ Key, Property string } `json:"remoteRef"`
					}
				}
			}
			if err := yaml.Unmarshal([]byte(doc), &es); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			for _, d := range es.Spec.Data {
				reads++
				if _, ok := s[d.RemoteRef.Key][d.RemoteRef.Property]; !ok {
					t.Errorf("%s reads %s/%s, which dev-secrets does not make", f, d.RemoteRef.Key, d.RemoteRef.Property)
				}
			}
		}
	}
	if reads < 20 {
		t.Fatalf("only %d reads found", reads)
	}
}
