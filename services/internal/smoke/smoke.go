// Package smoke is the smoke check of a deployed Dark Tower: it plays a
// client of the four services, the way a preview environment is judged
// after its deploy.
//
//   - token: a token from ac-service (client-credentials grant) is accepted
//     by global-controller, whose registry lists a live meeting-controller;
//   - mhs: every live meeting-controller (GC's registry, each MC called at
//     its registered endpoint) lists an admitting media-handler, so a
//     session placed on any of them gets media;
//   - media: meeting-controller issues join tickets for two participants of
//     one session, both join media-handler over UDP (ticket, challenge,
//     echoed cookie, welcome) and a datagram from each reaches the other
//     through media-handler.
//
// It needs a client registered at ac-service with the audiences
// global-controller and meeting-controller, and allowed by
// meeting-controller to request tickets (MC_TICKET_CLIENTS).
package smoke

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/darktower/delivery/services/internal/authn"
	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/darktower/delivery/services/internal/mh"
	"github.com/darktower/delivery/services/internal/opskit"
	"github.com/darktower/delivery/services/internal/wire"
)

// Config is where the services are and who the smoke check is.
type Config struct {
	ACURL, GCURL, MCURL string // https base URLs
	CAFile              string // the CA the services' certificates chain to ("" = system roots)
	Gateway             string // host:port the load dials for GC's and MC's APIs ("" = their own Services)
	ClientID            string
	ClientSecret        envconf.Secret
	Session             string        // media session id ("" = random)
	Timeout             time.Duration // per UDP answer
	RetryFor            time.Duration // a failing check is tried again until this long has passed
}

// LoadConfig reads SMOKE_* from the environment.
func LoadConfig(l *envconf.Loader) Config {
	c := Config{
		ACURL:  l.HTTPSURL("SMOKE_AC_URL", "ac-service's base URL, e.g. https://ac-service"),
		GCURL:  l.HTTPSURL("SMOKE_GC_URL", "global-controller's base URL, e.g. https://global-controller"),
		MCURL:  l.HTTPSURL("SMOKE_MC_URL", "meeting-controller's base URL, e.g. https://meeting-controller"),
		CAFile: l.OptionalFile("SMOKE_CA_FILE", "the PEM CA the services' certificates chain to"),
		// Where canaries run without a mesh, their traffic must pass the
		// Gateway that weights it (infra/overlays/preview/canary).
		Gateway:      l.Addr("SMOKE_GATEWAY", ""),
		ClientID:     l.String("SMOKE_CLIENT_ID", "darktower-smoke"),
		ClientSecret: l.RequiredSecret("SMOKE_CLIENT_SECRET", "the smoke client's secret at ac-service"),
		Session:      l.String("SMOKE_SESSION", ""),
		Timeout:      l.Duration("SMOKE_UDP_TIMEOUT", 3*time.Second, 100*time.Millisecond, time.Minute),
		// A pod that has just started may not be known to the network
		// policy enforcer yet; its first packets can be refused.
		RetryFor: l.Duration("SMOKE_RETRY_FOR", 20*time.Second, 0, 5*time.Minute),
	}
	return c
}

// Result is one check's outcome.
type Result struct {
	Check    string        `json:"check"`
	OK       bool          `json:"ok"`
	Detail   string        `json:"detail"`
	Duration time.Duration `json:"duration_ns"`
	Attempts int           `json:"attempts"`
}

func (r Result) String() string {
	verdict := "ok  "
	if !r.OK {
		verdict = "FAIL"
	}
	attempts := ""
	if r.Attempts > 1 {
		attempts = fmt.Sprintf(", %d attempts", r.Attempts)
	}
	return fmt.Sprintf("%s %-6s %s (%s%s)", verdict, r.Check, r.Detail, r.Duration.Round(time.Millisecond), attempts)
}

// Run runs every check, each even after another failed, and reports them
// in order to out as they finish.
func Run(ctx context.Context, c Config, out io.Writer) ([]Result, error) {
	hc, err := httpClient(c.CAFile)
	if err != nil {
		return nil, err
	}
	var results []Result
	for _, check := range []struct {
		name string
		run  func(context.Context, Config, *http.Client) (string, error)
	}{{"token", tokenAccepted}, {"mhs", everyMCHasMediaHandlers}, {"media", mediaRelayed}} {
		start := time.Now()
		var detail string
		var err error
		attempts := 0
		for {
			attempts++
			if detail, err = check.run(ctx, c, hc); err == nil || time.Since(start) >= c.RetryFor || ctx.Err() != nil {
				break
			}
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
		r := Result{Check: check.name, OK: err == nil, Detail: detail, Duration: time.Since(start), Attempts: attempts}
		if err != nil {
			r.Detail = err.Error()
		}
		results = append(results, r)
		fmt.Fprintln(out, r)
	}
	return results, nil
}

// Failed reports whether any check failed.
func Failed(results []Result) bool {
	for _, r := range results {
		if !r.OK {
			return true
		}
	}
	return false
}

func httpClient(caFile string) (*http.Client, error) {
	cfg, err := opskit.ClientTLS("SMOKE_CA_FILE", caFile)
	if err != nil {
		return nil, err
	}
	return opskit.NewHTTPClient(cfg), nil
}

func client(c Config, hc *http.Client, audience string) *authn.ServiceClient {
	return authn.NewServiceClient(hc, strings.TrimSuffix(c.ACURL, "/")+"/v1/oauth/token", c.ClientID, c.ClientSecret, audience)
}

func tokenAccepted(ctx context.Context, c Config, hc *http.Client) (string, error) {
	var list struct {
		MeetingControllers []wire.MeetingController `json:"meeting_controllers"`
	}
	u := strings.TrimSuffix(c.GCURL, "/") + "/v1/meeting-controllers"
	if err := client(c, hc, "global-controller").GetJSON(ctx, u, &list); err != nil {
		return "", fmt.Errorf("global-controller with ac-service's token: %w", err)
	}
	if len(list.MeetingControllers) == 0 {
		return "", errors.New("global-controller accepted ac-service's token but lists no live meeting-controller (has it registered?)")
	}
	ids := make([]string, 0, len(list.MeetingControllers))
	for _, mc := range list.MeetingControllers {
		ids = append(ids, mc.ID)
	}
	return fmt.Sprintf("global-controller accepted ac-service's token; live meeting-controllers: %s", strings.Join(ids, ", ")), nil
}

func everyMCHasMediaHandlers(ctx context.Context, c Config, hc *http.Client) (string, error) {
	var list struct {
		MeetingControllers []wire.MeetingController `json:"meeting_controllers"`
	}
	if err := client(c, hc, "global-controller").GetJSON(ctx, strings.TrimSuffix(c.GCURL, "/")+"/v1/meeting-controllers", &list); err != nil {
		return "", fmt.Errorf("global-controller's registry: %w", err)
	}
	if len(list.MeetingControllers) == 0 {
		return "", errors.New("global-controller lists no live meeting-controller")
	}
	// Each MC is called at its registered endpoint (a pod address) under
	// SMOKE_MC_URL's name, which its certificate carries.
	mcURL, err := url.Parse(c.MCURL)
	if err != nil {
		return "", err
	}
	var counts []string
	for _, mc := range list.MeetingControllers {
		ep, err := url.Parse(mc.Endpoint)
		if err != nil || ep.Hostname() == "" {
			return "", fmt.Errorf("meeting-controller %s registered the endpoint %q", mc.ID, mc.Endpoint)
		}
		pinned := opskit.PinnedClient(hc, hostPort(mcURL), hostPort(ep))
		var mhs struct {
			MediaHandlers []wire.MHRegistration `json:"media_handlers"`
		}
		if err := client(c, pinned, "meeting-controller").GetJSON(ctx, strings.TrimSuffix(c.MCURL, "/")+"/v1/media-handlers", &mhs); err != nil {
			return "", fmt.Errorf("meeting-controller %s at %s: %w", mc.ID, mc.Endpoint, err)
		}
		admitting := 0
		for _, mh := range mhs.MediaHandlers {
			if mh.Admitting {
				admitting++
			}
		}
		if admitting == 0 {
			return "", fmt.Errorf("meeting-controller %s lists %d media-handlers, none admitting: sessions it places get no media", mc.ID, len(mhs.MediaHandlers))
		}
		counts = append(counts, fmt.Sprintf("%s %d", mc.ID, admitting))
	}
	return "admitting media-handlers per meeting-controller: " + strings.Join(counts, ", "), nil
}

func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "443"
	}
	return net.JoinHostPort(u.Hostname(), port)
}

func mediaRelayed(ctx context.Context, c Config, hc *http.Client) (string, error) {
	session := c.Session
	if session == "" {
		b := make([]byte, 6)
		_, _ = rand.Read(b)
		session = "smoke-" + hex.EncodeToString(b)
	}
	mc := client(c, hc, "meeting-controller")
	ticket := func(participant string) (wire.MediaTicket, []byte, error) {
		var mt wire.MediaTicket
		u := strings.TrimSuffix(c.MCURL, "/") + "/v1/media-tickets"
		if err := mc.PostJSON(ctx, u, wire.MediaTicketRequest{SessionID: session, ParticipantID: participant}, &mt); err != nil {
			return mt, nil, fmt.Errorf("meeting-controller's ticket for %s: %w", participant, err)
		}
		raw, err := base64.RawURLEncoding.DecodeString(mt.Ticket)
		if err != nil {
			return mt, nil, fmt.Errorf("meeting-controller's ticket for %s is not base64url: %w", participant, err)
		}
		return mt, raw, nil
	}
	aliceTicket, aliceRaw, err := ticket("alice")
	if err != nil {
		return "", err
	}
	bobTicket, bobRaw, err := ticket("bob")
	if err != nil {
		return "", err
	}
	if aliceTicket.MediaAddr != bobTicket.MediaAddr {
		return "", fmt.Errorf("one session sent to two media addresses (%s, %s)", aliceTicket.MediaAddr, bobTicket.MediaAddr)
	}
	to, err := net.ResolveUDPAddr("udp", aliceTicket.MediaAddr)
	if err != nil {
		return "", fmt.Errorf("the ticket's media address %q: %w", aliceTicket.MediaAddr, err)
	}
	p := participants{timeout: c.Timeout, to: to}
	alice, err := p.join("alice", aliceRaw)
	if err != nil {
		return "", err
	}
	defer alice.Close()
	bob, err := p.join("bob", bobRaw)
	if err != nil {
		return "", err
	}
	defer bob.Close()
	start := time.Now()
	if err := p.relay(session, alice, bob, "alice", "bob"); err != nil {
		return "", err
	}
	if err := p.relay(session, bob, alice, "bob", "alice"); err != nil {
		return "", err
	}
	return fmt.Sprintf("session %s on %s (%s): alice and bob joined with meeting-controller's tickets; a datagram each way relayed in %s",
		session, aliceTicket.MediaHandler, aliceTicket.MediaAddr, time.Since(start).Round(10*time.Microsecond)), nil
}

type participants struct {
	timeout time.Duration
	to      *net.UDPAddr
}

func (p participants) read(c *net.UDPConn) ([]byte, error) {
	buf := make([]byte, 1500)
	_ = c.SetReadDeadline(time.Now().Add(p.timeout))
	n, _, err := c.ReadFromUDP(buf)
	if err != nil {
		return nil, err
	}
	return buf[:n], nil
}

// join does the ticket → challenge → echoed cookie → welcome exchange.
func (p participants) join(who string, ticket []byte) (*net.UDPConn, error) {
	c, err := net.ListenUDP("udp", nil)
	if err != nil {
		return nil, err
	}
	fail := func(format string, args ...any) (*net.UDPConn, error) {
		c.Close()
		return nil, fmt.Errorf("%s joining media-handler at %s: %s", who, p.to, fmt.Sprintf(format, args...))
	}
	if _, err := c.WriteToUDP(mh.EncodeJoin(ticket, nil), p.to); err != nil {
		return fail("%v", err)
	}
	answer, err := p.read(c)
	if err != nil {
		return fail("no challenge within %s (%v)", p.timeout, err)
	}
	cookie, ok := mh.ParseChallenge(answer)
	if !ok {
		return fail("the answer to a ticket is not a challenge (%d bytes)", len(answer))
	}
	if _, err := c.WriteToUDP(mh.EncodeJoin(ticket, cookie), p.to); err != nil {
		return fail("%v", err)
	}
	if answer, err = p.read(c); err != nil || !mh.IsWelcome(answer) {
		return fail("no welcome after echoing the cookie (%v)", err)
	}
	return c, nil
}

func (p participants) relay(session string, from, to *net.UDPConn, fromName, toName string) error {
	payload := make([]byte, 16)
	_, _ = rand.Read(payload)
	d, err := mh.EncodeDatagram(session, payload)
	if err != nil {
		return err
	}
	if _, err := from.WriteToUDP(d, p.to); err != nil {
		return err
	}
	got, err := p.read(to)
	if err != nil {
		return fmt.Errorf("%s's datagram did not reach %s through media-handler within %s (%v)", fromName, toName, p.timeout, err)
	}
	if !bytes.HasSuffix(got, payload) {
		return fmt.Errorf("%s received %d bytes that are not %s's datagram", toName, len(got), fromName)
	}
	return nil
}
