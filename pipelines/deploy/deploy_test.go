package deploy_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/darktower/delivery/pipelines/deploy"
	"github.com/darktower/delivery/pipelines/devsecrets"
	"github.com/darktower/delivery/pipelines/validate"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func root(t testing.TB) string {
	r, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Every ExternalSecret of the preview overlay and the data namespace is
// realized from dev-secrets, with the store's key and property each names.
func TestRealizeExternalSecretsCoversThePreviewOverlay(t *testing.T) {
	var objs []*unstructured.Unstructured
	for _, dir := range []string{"overlays/preview", "platform/database"} {
		r, err := validate.Render(filepath.Join(root(t), "infra", dir))
		if err != nil {
			t.Fatal(err)
		}
		objs = append(objs, r...)
	}
	local, err := devsecrets.Generate(devsecrets.Options{Namespace: "dark-tower-local-secrets", ServiceNamespaces: []string{"preview"}, DataNamespace: deploy.DataNamespace})
	if err != nil {
		t.Fatal(err)
	}
	secrets, err := deploy.RealizeExternalSecrets(objs, local)
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]*corev1.Secret{}
	for _, s := range secrets {
		byName[s.Namespace+"/"+s.Name] = s
	}
	tls := byName["preview/ac-service-tls"]
	if tls == nil || tls.Type != corev1.SecretTypeTLS || !strings.Contains(tls.StringData["ca.crt"], "BEGIN CERTIFICATE") || tls.StringData["tls.key"] == "" {
		t.Fatalf("ac-service-tls not realized as a TLS secret with its CA: %+v", tls)
	}
	if pg := byName[deploy.DataNamespace+"/dark-tower-pg-ac"]; pg == nil || pg.StringData["username"] != "ac" || pg.StringData["password"] == "" {
		t.Fatalf("dark-tower-pg-ac: %+v", pg)
	}
	// A reference the store cannot answer names the ExternalSecret.
	_, err = deploy.RealizeExternalSecrets(objs, local[1:])
	if err == nil || !strings.Contains(err.Error(), "ExternalSecret") {
		t.Fatalf("want an error naming the ExternalSecret, got %v", err)
	}
}
