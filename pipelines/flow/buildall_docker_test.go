package flow

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/darktower/delivery/pipelines/build"
	"golang.org/x/crypto/bcrypt"
)

// docker runs the docker CLI against the engine the test command started
// (DOCKER_HOST) and returns its trimmed stdout.
func docker(t *testing.T, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command("docker", args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(stdout.String())
}

func requireDocker(t *testing.T) {
	t.Helper()
	out, err := exec.Command("docker", "version", "--format", "{{.Server.Version}}").CombinedOutput()
	if err != nil {
		t.Fatalf("this test needs a Docker engine (the README's test command installs Debian's docker.io and starts dockerd; or export DOCKER_HOST): %v\n%s", err, out)
	}
}

// serviceEnv is the least configuration each service starts with. The
// dependencies are unreachable on purpose: /health never touches them,
// and every service keeps retrying rather than exiting.
func serviceEnv(t *testing.T, dir string) map[string][]string {
	hash, err := bcrypt.GenerateFromPassword([]byte("not-a-real-secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	clients := filepath.Join(dir, "clients.json")
	body := fmt.Sprintf(`{"clients":[{"id":"meeting-controller","secret_bcrypt":%q,"audiences":["global-controller"]}]}`, hash)
	if err := os.WriteFile(clients, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	rand.Read(key)
	common := []string{"-e", "DEV_SELF_SIGNED_TLS=true"}
	return map[string][]string{
		"ac-service": append(common, "-v", clients+":/etc/darktower/clients.json:ro",
			"-e", "AC_CLIENTS_FILE=/etc/darktower/clients.json", "-e", "AC_MASTER_KEY="+base64.StdEncoding.EncodeToString(key),
			"-e", "AC_DATABASE_URL=postgres://ac@db.invalid:5432/ac"),
		"global-controller": append(common, "-e", "GC_DATABASE_URL=postgres://gc@db.invalid:5432/gc",
			"-e", "GC_AC_JWKS_URL=https://ac.invalid/.well-known/jwks.json"),
		"meeting-controller": append(common, "-e", "MC_REDIS_ADDR=redis.invalid:6379", "-e", "MC_CLIENT_SECRET=x",
			"-e", "MC_ADVERTISE_URL=https://mc.invalid", "-e", "MC_GC_URL=https://gc.invalid",
			"-e", "MC_AC_TOKEN_URL=https://ac.invalid/v1/oauth/token", "-e", "MC_AC_JWKS_URL=https://ac.invalid/.well-known/jwks.json"),
		"media-handler": append(common, "-e", "MH_CLIENT_SECRET=x", "-e", "MH_ADVERTISE_URL=https://mh.invalid",
			"-e", "MH_MC_URL=https://mc.invalid", "-e", "MH_AC_TOKEN_URL=https://ac.invalid/v1/oauth/token"),
		"flag-gateway": append(common, "-e", "FLAGS_ETCD_ENDPOINTS=http://etcd.invalid:2379",
			"-e", "FLAGS_AC_JWKS_URL=https://ac.invalid/.well-known/jwks.json"),
	}
}

func getUntil(t *testing.T, url string, deadline time.Time) (int, string) {
	t.Helper()
	for {
		resp, err := http.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp.StatusCode, string(body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %v", url, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestBuiltImagesRunInDocker loads the amd64 images into a real engine with
// build-all --load and runs each: /health answers 200 OK, the process runs
// as uid 65532, and there is no shell to exec.
func TestBuiltImagesRunInDocker(t *testing.T) {
	requireDocker(t)
	root := t.TempDir()
	copyTree(t, root)
	version := fmt.Sprintf("test-%d", time.Now().UnixNano())
	m, err := BuildAll(context.Background(), BuildAllOptions{Root: root, Out: filepath.Join(root, "dist"), Base: build.BaseSkeleton,
		Platforms: []string{"linux/amd64"}, Version: version, SourceURL: "https://example.com/src", Env: fixedEnv, VulnDB: testDB, DevKeyDir: testDevKeys, Load: true})
	if err != nil {
		t.Fatal(err)
	}
	env := serviceEnv(t, root)
	for _, img := range m.Images {
		t.Cleanup(func() { exec.Command("docker", "rmi", "-f", img.Tag).Run() })
	}
	for _, img := range m.Images {
		t.Run(img.Service, func(t *testing.T) {
			if id := docker(t, "image", "inspect", "-f", "{{.Id}}", img.Tag); id != img.Loaded || id == "" {
				t.Fatalf("engine has %s as %q, build-all loaded %q", img.Tag, id, img.Loaded)
			}
			args := append([]string{"run", "-d", "-p", "127.0.0.1::8080"}, env[img.Service]...)
			id := docker(t, append(args, img.Tag)...)
			t.Cleanup(func() {
				if t.Failed() {
					logs, _ := exec.Command("docker", "logs", id).CombinedOutput()
					t.Logf("%s logs:\n%s", img.Service, logs)
				}
				exec.Command("docker", "rm", "-f", id).Run()
			})
			hostPort := docker(t, "port", id, "8080/tcp")
			hostPort = strings.Split(hostPort, "\n")[0]
			code, body := getUntil(t, "http://"+hostPort+"/health", time.Now().Add(30*time.Second))
			if code != http.StatusOK || body != "OK" {
				t.Fatalf("GET /health = %d %q, want 200 OK", code, body)
			}
			pid := docker(t, "inspect", "-f", "{{.State.Pid}}", id)
			status, err := os.ReadFile("/proc/" + pid + "/status")
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(string(status), "\n") {
				if strings.HasPrefix(line, "Uid:") || strings.HasPrefix(line, "Gid:") {
					if f := strings.Fields(line); len(f) != 5 || f[1] != "65532" || f[2] != "65532" {
						t.Errorf("%s runs with %q, want 65532 throughout", img.Service, line)
					}
				}
			}
			if out, err := exec.Command("docker", "exec", id, "/bin/sh", "-c", "true").CombinedOutput(); err == nil {
				t.Errorf("docker exec /bin/sh succeeded in %s: the image has a shell (%s)", img.Service, out)
			}
			if img.Service == "media-handler" {
				// Non-root, yet bound to UDP 443: the engine opens low ports
				// to unprivileged users in the container's network namespace.
				_, ready := getUntil(t, "http://"+hostPort+"/ready", time.Now().Add(10*time.Second))
				var r map[string]string
				if err := json.Unmarshal([]byte(ready), &r); err != nil || r["media_port"] != "healthy" {
					t.Errorf("media-handler /ready = %s, want media_port healthy", ready)
				}
			}
		})
	}
}
