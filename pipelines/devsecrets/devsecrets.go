// Package devsecrets generates the local environment's secrets: what a
// cloud secrets backend holds for Dark Tower, made up fresh for one kind
// cluster (infra/local/setup.sh applies them once; external-secrets then
// syncs them exactly as in the cloud). Nothing here is for production.
package devsecrets

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/darktower/delivery/pipelines/internal/certs"
	"golang.org/x/crypto/bcrypt"
	"sigs.k8s.io/yaml"
)

// Options say where the secrets go and which namespaces the services'
// certificates must name.
type Options struct {
	Namespace         string    // where the Secrets are created (the local store reads it)
	ServiceNamespaces []string  // namespaces running the services (the simulated regions)
	DataNamespace     string    // PostgreSQL's and Redis's namespace
	Now               time.Time // certificate validity starts here
	Rand              io.Reader // crypto/rand.Reader when nil
}

// Secret is a Kubernetes Secret with string data.
type Secret struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   Metadata          `json:"metadata"`
	Type       string            `json:"type"`
	StringData map[string]string `json:"stringData"`
}

// Metadata is the part of ObjectMeta a Secret here needs.
type Metadata struct {
	Name      string            `json:"name"`
	Namespace string            `json:"namespace"`
	Labels    map[string]string `json:"labels"`
}

// Services are the four services (their certificates and clients).
var Services = []string{"ac-service", "global-controller", "meeting-controller", "media-handler"}

// clientAudiences: who asks AC for tokens, and for whom.
var clientAudiences = map[string][]string{
	"meeting-controller": {"global-controller"},  // registers with GC
	"media-handler":      {"meeting-controller"}, // registers with MC
	// The preview environments' smoke check (darktower-smoke): a token GC
	// must accept, and media tickets from MC (MC_TICKET_CLIENTS). Only
	// environments whose secrets come from here know this client.
	"darktower-smoke": {"global-controller", "meeting-controller"},
}

// clientInstances: the registry ids each client may register (its pods'
// names: MC_ID and MH_ID are $(POD_NAME) of their Deployments).
var clientInstances = map[string][]string{
	"meeting-controller": {"meeting-controller-*"}, // at GC
	"media-handler":      {"media-handler-*"},      // at MC
}

// Generate makes every secret the ExternalSecrets in infra/ read.
func Generate(o Options) ([]Secret, error) {
	if o.Namespace == "" || len(o.ServiceNamespaces) == 0 || o.DataNamespace == "" {
		return nil, errors.New("devsecrets: Namespace, ServiceNamespaces and DataNamespace are required")
	}
	r := o.Rand
	if r == nil {
		r = rand.Reader
	}
	if o.Now.IsZero() {
		o.Now = time.Now()
	}
	g := &gen{o: o, r: r}
	ca, err := g.ca()
	if err != nil {
		return nil, err
	}
	g.add("dark-tower-internal-ca", map[string]string{"certificate": string(ca.CertPEM), "private-key": string(ca.KeyPEM)})
	for _, svc := range Services {
		c, err := g.leaf(ca, svc)
		if err != nil {
			return nil, err
		}
		g.add("dark-tower-"+svc+"-tls", map[string]string{"certificate": string(c.CertPEM), "private-key": string(c.KeyPEM)})
	}
	pw := map[string]string{}
	for _, k := range []string{"ac-db", "gc-db", "redis", "grafana", "backup-id", "backup-secret"} {
		if pw[k], err = g.random(32); err != nil {
			return nil, err
		}
	}
	clients := struct {
		Clients []client `json:"clients"`
	}{}
	for _, id := range []string{"meeting-controller", "media-handler", "darktower-smoke"} {
		secret, err := g.random(32)
		if err != nil {
			return nil, err
		}
		hash, err := bcrypt.GenerateFromPassword([]byte(secret), bcrypt.DefaultCost)
		if err != nil {
			return nil, err
		}
		clients.Clients = append(clients.Clients, client{ID: id, SecretBcrypt: string(hash), Audiences: clientAudiences[id], Instances: clientInstances[id]})
		g.add("dark-tower-"+id, map[string]string{"client-secret": secret})
	}
	clientsJSON, err := json.MarshalIndent(clients, "", "  ")
	if err != nil {
		return nil, err
	}
	masterKey := make([]byte, 32)
	if _, err := io.ReadFull(r, masterKey); err != nil {
		return nil, err
	}
	g.add("dark-tower-ac-service", map[string]string{
		"database-url": g.databaseURL("ac", pw["ac-db"]),
		"master-key":   base64.StdEncoding.EncodeToString(masterKey),
		"clients-json": string(clientsJSON),
	})
	g.add("dark-tower-global-controller", map[string]string{"database-url": g.databaseURL("gc", pw["gc-db"])})
	g.add("dark-tower-postgresql-ac", map[string]string{"username": "ac", "password": pw["ac-db"]})
	g.add("dark-tower-postgresql-gc", map[string]string{"username": "gc", "password": pw["gc-db"]})
	// There is no object store locally: backups fail there, and say so.
	g.add("dark-tower-postgresql-backup", map[string]string{"access-key-id": pw["backup-id"], "secret-access-key": pw["backup-secret"]})
	g.add("dark-tower-redis", map[string]string{"password": pw["redis"]})
	g.add("dark-tower-grafana", map[string]string{"admin-user": "admin", "admin-password": pw["grafana"]})
	sort.Slice(g.out, func(i, k int) bool { return g.out[i].Metadata.Name < g.out[k].Metadata.Name })
	return g.out, nil
}

type client struct {
	ID           string   `json:"id"`
	SecretBcrypt string   `json:"secret_bcrypt"`
	Audiences    []string `json:"audiences"`
	Instances    []string `json:"instances"`
}

type gen struct {
	o   Options
	r   io.Reader
	out []Secret
}

func (g *gen) add(name string, data map[string]string) {
	g.out = append(g.out, Secret{APIVersion: "v1", Kind: "Secret", Type: "Opaque", StringData: data,
		Metadata: Metadata{Name: name, Namespace: g.o.Namespace, Labels: map[string]string{
			"app.kubernetes.io/part-of": "dark-tower", "app.kubernetes.io/managed-by": "darktower-dev-secrets"}}})
}

func (g *gen) random(n int) (string, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(g.r, b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// databaseURL points at the pooler, with TLS verified against the
// internal CA the services mount as ca.crt.
func (g *gen) databaseURL(db, password string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword(db, password),
		Host: "dark-tower-pg-pooler-rw." + g.o.DataNamespace + ".svc:5432", Path: "/" + db,
		RawQuery: "sslmode=verify-full&sslrootcert=/etc/darktower/tls/ca.crt"}
	return u.String()
}

func (g *gen) ca() (*certs.Pair, error) {
	return certs.Issue(&x509.Certificate{Subject: pkix.Name{CommonName: "Dark Tower local internal CA"}, IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		NotBefore: g.o.Now.Add(-time.Hour), NotAfter: g.o.Now.AddDate(1, 0, 0)}, nil, g.r)
}

// leaf issues svc's certificate, valid for every name it is reached by.
func (g *gen) leaf(ca *certs.Pair, svc string) (*certs.Pair, error) {
	names := []string{svc}
	hosts := []string{svc}
	if svc == "ac-service" {
		hosts = append(hosts, "ac-service-headless")
	}
	for _, ns := range g.o.ServiceNamespaces {
		for _, h := range hosts {
			names = append(names, h+"."+ns, h+"."+ns+".svc", h+"."+ns+".svc.cluster.local")
		}
	}
	if svc == "ac-service" { // the StatefulSet's pods: ac-service-0.ac-service-headless.<ns>.svc
		for _, ns := range g.o.ServiceNamespaces {
			names = append(names, "*.ac-service-headless."+ns+".svc")
		}
	}
	return certs.Issue(&x509.Certificate{Subject: pkix.Name{CommonName: svc}, DNSNames: names,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		NotBefore: g.o.Now.Add(-time.Hour), NotAfter: g.o.Now.AddDate(0, 3, 0)}, ca, g.r)
}

// Manifest renders the secrets as one YAML stream for `kubectl apply -f -`.
func Manifest(secrets []Secret) ([]byte, error) {
	var docs []string
	for _, s := range secrets {
		y, err := yaml.Marshal(s)
		if err != nil {
			return nil, err
		}
		docs = append(docs, string(y))
	}
	return []byte(strings.Join(docs, "---\n")), nil
}

// envKeys maps the compose file's variables (infra/local/docker-compose.yml)
// to secret/key.
var envKeys = []struct{ env, secret, key string }{
	{"AC_DB_PASSWORD", "dark-tower-postgresql-ac", "password"},
	{"GC_DB_PASSWORD", "dark-tower-postgresql-gc", "password"},
	{"REDIS_PASSWORD", "dark-tower-redis", "password"},
	{"AC_MASTER_KEY", "dark-tower-ac-service", "master-key"},
	{"AC_CLIENTS_JSON", "dark-tower-ac-service", "clients-json"},
	{"MC_CLIENT_SECRET", "dark-tower-meeting-controller", "client-secret"},
	{"MH_CLIENT_SECRET", "dark-tower-media-handler", "client-secret"},
	{"TLS_CA_PEM", "dark-tower-internal-ca", "certificate"},
	{"AC_TLS_CERT", "dark-tower-ac-service-tls", "certificate"},
	{"AC_TLS_KEY", "dark-tower-ac-service-tls", "private-key"},
	{"GC_TLS_CERT", "dark-tower-global-controller-tls", "certificate"},
	{"GC_TLS_KEY", "dark-tower-global-controller-tls", "private-key"},
	{"MC_TLS_CERT", "dark-tower-meeting-controller-tls", "certificate"},
	{"MC_TLS_KEY", "dark-tower-meeting-controller-tls", "private-key"},
	{"MH_TLS_CERT", "dark-tower-media-handler-tls", "certificate"},
	{"MH_TLS_KEY", "dark-tower-media-handler-tls", "private-key"},
}

// EnvFile renders the secrets as a compose .env file: KEY='value', single
// quoted so compose takes the value literally ($ in bcrypt hashes, PEM
// newlines).
func EnvFile(secrets []Secret) (string, error) {
	byName := map[string]map[string]string{}
	for _, s := range secrets {
		byName[s.Metadata.Name] = s.StringData
	}
	var b strings.Builder
	b.WriteString("# Local development secrets for infra/local/docker-compose.yml (go run . dev-secrets --format env).\n")
	for _, k := range envKeys {
		v, ok := byName[k.secret][k.key]
		if !ok {
			return "", fmt.Errorf("devsecrets: no %s/%s for %s", k.secret, k.key, k.env)
		}
		if strings.Contains(v, "'") {
			return "", fmt.Errorf("devsecrets: %s contains a single quote", k.env)
		}
		fmt.Fprintf(&b, "%s='%s'\n", k.env, strings.TrimSuffix(v, "\n"))
	}
	return b.String(), nil
}
