// Package mh is the Media Handler: a passthrough SFU on one multiplexed UDP
// port that registers with its meeting controller and heartbeats.
package mh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/darktower/delivery/services/internal/authn"
	"github.com/darktower/delivery/services/internal/envconf"
	"github.com/darktower/delivery/services/internal/flags"
	"github.com/darktower/delivery/services/internal/mticket"
	"github.com/darktower/delivery/services/internal/opskit"
	"github.com/darktower/delivery/services/internal/wire"
	"github.com/prometheus/client_golang/prometheus"
)

// Config is media-handler's own configuration.
type Config struct {
	ID                 string         // MH_ID (default: host name)
	MediaAddr          string         // MH_MEDIA_ADDR: the UDP media port to bind
	AdvertiseMediaAddr string         // MH_ADVERTISE_MEDIA_ADDR: host:port clients send media to
	AdvertiseURL       string         // MH_ADVERTISE_URL: this MH's API URL as MC reaches it
	MCURL              string         // MH_MC_URL
	MCPeers            string         // MH_MC_PEERS: a DNS name listing every MC (optional)
	TokenURL           string         // MH_AC_TOKEN_URL
	ClientID           string         // MH_CLIENT_ID
	ClientSecret       envconf.Secret // MH_CLIENT_SECRET
	MCAudience         string         // MH_MC_AUDIENCE
	HeartbeatInterval  time.Duration  // MH_HEARTBEAT_INTERVAL
	CapacityMbps       float64        // MH_BANDWIDTH_CAPACITY_MBPS
	MeterWindow        time.Duration  // MH_BANDWIDTH_WINDOW
	IdleTimeout        time.Duration  // MH_PARTICIPANT_IDLE_TIMEOUT
	Limits             Limits         // MH_MAX_* and MH_*_RATE_PPS
	Flags              flags.Config   // FLAGS_URL, FLAGS_CACHE_FILE, FLAGS_AUDIENCE
	// fault degrades the media path in a canaryfault test build
	// (DT_FAULT_MEDIA_*, fault_on.go); nothing in a real build.
	fault mediaFault
}

// LoadConfig reads media-handler's variables.
func LoadConfig(l *envconf.Loader) Config {
	host, _ := os.Hostname()
	c := Config{
		ID:                l.String("MH_ID", host),
		MediaAddr:         l.Addr("MH_MEDIA_ADDR", ":443"),
		ClientID:          l.String("MH_CLIENT_ID", "media-handler"),
		ClientSecret:      l.RequiredSecret("MH_CLIENT_SECRET", "this MH's client secret registered with AC"),
		MCAudience:        l.String("MH_MC_AUDIENCE", "meeting-controller"),
		HeartbeatInterval: l.Duration("MH_HEARTBEAT_INTERVAL", 10*time.Second, 100*time.Millisecond, 10*time.Minute),
		CapacityMbps:      l.Float("MH_BANDWIDTH_CAPACITY_MBPS", 1000, 0.001, 1e6),
		MeterWindow:       l.Duration("MH_BANDWIDTH_WINDOW", 5*time.Second, time.Second, time.Minute),
		IdleTimeout:       l.Duration("MH_PARTICIPANT_IDLE_TIMEOUT", 30*time.Second, time.Second, time.Hour),
		Limits: Limits{
			MaxDatagram:       l.Int("MH_MAX_DATAGRAM", DefaultLimits.MaxDatagram, 576, 9000),
			MaxSessions:       l.Int("MH_MAX_SESSIONS", DefaultLimits.MaxSessions, 1, 1_000_000),
			MaxParticipants:   l.Int("MH_MAX_PARTICIPANTS", DefaultLimits.MaxParticipants, 1, 1_000_000),
			MaxPerSession:     l.Int("MH_MAX_PARTICIPANTS_PER_SESSION", DefaultLimits.MaxPerSession, 2, 10_000),
			MaxPerSourceIP:    l.Int("MH_MAX_PARTICIPANTS_PER_SOURCE", DefaultLimits.MaxPerSourceIP, 1, 100_000),
			SourceRatePPS:     l.Float("MH_SOURCE_RATE_PPS", DefaultLimits.SourceRatePPS, 1, 1e6),
			JoinRatePerSource: l.Float("MH_JOIN_RATE_PPS", DefaultLimits.JoinRatePerSource, 0.1, 1e4),
		},
	}
	c.Flags = flags.LoadConfig(l)
	c.fault = loadMediaFault(l)
	c.AdvertiseMediaAddr = l.String("MH_ADVERTISE_MEDIA_ADDR", c.MediaAddr)
	if h, _, err := net.SplitHostPort(c.AdvertiseMediaAddr); err != nil || h == "" {
		// ":443" is fine to bind but not to hand to a client.
		if c.AdvertiseMediaAddr == c.MediaAddr {
			_, port, _ := net.SplitHostPort(c.MediaAddr)
			c.AdvertiseMediaAddr = net.JoinHostPort(host, port)
		} else {
			l.Problemf("MH_ADVERTISE_MEDIA_ADDR is malformed: expected host:port clients can reach")
		}
	}
	c.AdvertiseURL = l.HTTPSURL("MH_ADVERTISE_URL", "this MH's API URL as MC reaches it, e.g. https://media-handler-0.media-handler")
	c.MCURL = l.HTTPSURL("MH_MC_URL", "MC's API base URL, e.g. https://meeting-controller")
	// Each MC places sessions only on the MHs registered with it, so an MH
	// behind a load-balanced MH_MC_URL would serve one MC and leave the
	// others without media handlers: with MH_MC_PEERS (e.g. a headless
	// Service's name) MH registers with every address it resolves to.
	c.MCPeers = l.String("MH_MC_PEERS", "")
	c.TokenURL = l.HTTPSURL("MH_AC_TOKEN_URL", "AC's token endpoint, e.g. https://ac-service/v1/oauth/token")
	return c
}

// Service is a running MH.
type Service struct {
	cfg   Config
	kit   *opskit.Kit
	mc    *authn.ServiceClient
	meter *Meter
	mcReg opskit.Freshness
	keys  *KeyRing // ticket keys learned from MC registrations
	flags *flags.Client

	mu    sync.Mutex
	relay *Relay // nil until the media port is bound

	beats *prometheus.CounterVec

	lookupHost func(ctx context.Context, host string) ([]string, error) // MH_MC_PEERS (tests replace it)
	peers      sync.Map                                                 // MC address → its *authn.ServiceClient (MH_MC_PEERS)
	draining   atomic.Bool                                              // shutting down: no more heartbeats
}

// New builds MH.
func New(_ context.Context, kit *opskit.Kit, cfg Config) (opskit.Service, error) {
	return NewService(kit, cfg), nil
}

// NewService is New with the concrete type (tests).
func NewService(kit *opskit.Kit, cfg Config) *Service {
	s := &Service{
		cfg: cfg, kit: kit,
		mc:         authn.NewServiceClient(kit.HTTPClient, cfg.TokenURL, cfg.ClientID, cfg.ClientSecret, cfg.MCAudience),
		meter:      NewMeter(cfg.CapacityMbps*1e6, cfg.MeterWindow),
		lookupHost: net.DefaultResolver.LookupHost,
		keys:       &KeyRing{},
		// Its own token source: the gateway's audience, this MH's credentials.
		flags: flags.ForService(cfg.Flags, kit, authn.NewServiceClient(kit.HTTPClient, cfg.TokenURL, cfg.ClientID,
			cfg.ClientSecret, cfg.Flags.Audience).BearerToken),
		beats: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mh_mc_heartbeats_total",
			Help: "Registrations/heartbeats sent to MC, by result (ok, error).",
		}, []string{"result"}),
	}
	kit.Registry.MustRegister(s.beats,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mh_bandwidth_utilization_ratio",
			Help: "Media throughput over the window as a fraction of MH_BANDWIDTH_CAPACITY_MBPS (warning at mh.bandwidth.warning_ratio, 0.7 by default; new participants rejected at mh.admission.hard_limit_ratio, 0.8 by default).",
		}, func() float64 { return s.meter.Utilization(time.Now()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "mh_bandwidth_state",
			Help: "0 normal, 1 warning (≥ mh.bandwidth.warning_ratio of capacity, 70% by default), 2 critical (≥ mh.admission.hard_limit_ratio, 80% by default: new participants rejected).",
		}, func() float64 { return float64(s.thresholds().State(s.meter.Utilization(time.Now()))) }),
	)
	s.cfg.fault.announce(kit.Logger)
	return s
}

// thresholds are the bandwidth thresholds in force: the flags
// mh.bandwidth.warning_ratio and mh.admission.hard_limit_ratio, read at
// each use (live, else cached, else the ADR's 0.7 and 0.8).
func (s *Service) thresholds() Thresholds {
	return Thresholds{Warning: s.flags.Float(flags.MhBandwidthWarningRatio), HardLimit: s.flags.Float(flags.MhAdmissionHardLimitRatio)}
}

func (s *Service) currentRelay() *Relay {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.relay
}

// mcFresh reports whether the last MC registration is at most three
// heartbeat intervals old: MH then admits new sessions.
func (s *Service) mcFresh() bool { return s.mcReg.Within(3*s.cfg.HeartbeatInterval, time.Now()) == nil }

// Checks: the bound media port and an MC registration since start (ADR-0012:
// MH is not ready before MC took it, and without one it holds no ticket
// key). After that, losing MC (or the control plane behind it) does not
// make MH not ready — that would drop the calls it relays — it stops
// admitting new sessions instead: mc_heartbeat is informational.
func (s *Service) Checks() []opskit.Check {
	// The flag client only when a gateway is configured; informational:
	// flags never gate readiness.
	return append([]opskit.Check{
		{Name: "mc_registration", Func: func(context.Context) error {
			if s.mcReg.Last().IsZero() || s.keys.Len() == 0 {
				return errors.New("never registered with MC")
			}
			return nil
		}},
		{Name: "mc_heartbeat", Informational: true, Func: func(context.Context) error {
			return s.mcReg.Within(3*s.cfg.HeartbeatInterval, time.Now())
		}},
		{Name: "media_port", Func: func(context.Context) error {
			if s.currentRelay() == nil {
				return errors.New("media port not bound")
			}
			return nil
		}},
	}, s.flags.Checks()...)
}

// Run binds the media port (retrying: a port held by a previous instance is
// released shortly), relays, expires idle participants and heartbeats to MC.
func (s *Service) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	defer flags.Start(ctx, s.flags)()
	relayErr := make(chan error, 1)
	wg.Add(2)
	go func() {
		defer wg.Done()
		s.bindAndRelay(ctx, relayErr)
	}()
	go func() {
		defer wg.Done()
		s.heartbeat(ctx)
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-relayErr:
			return err
		case now := <-tick.C:
			if r := s.currentRelay(); r != nil {
				r.Expire(now)
			}
		}
	}
}

func (s *Service) bindAndRelay(ctx context.Context, relayErr chan<- error) {
	var conn *net.UDPConn
	logged := false
	opskit.Every(ctx, time.Hour, time.Second, func(context.Context) error {
		if conn != nil {
			return nil
		}
		addr, err := net.ResolveUDPAddr("udp", s.cfg.MediaAddr)
		if err == nil {
			conn, err = net.ListenUDP("udp", addr)
		}
		if err != nil {
			if !logged {
				s.kit.Logger.Warn("binding media port failed; retrying", "addr", s.cfg.MediaAddr, "error", err.Error())
				logged = true
			}
			return err
		}
		relay := NewRelay(conn, s.meter, RelayConfig{ID: s.cfg.ID, Idle: s.cfg.IdleTimeout, Limits: s.cfg.Limits, Keys: s.keys, AdmitNewSessions: s.mcFresh, Thresholds: s.thresholds,
			fault: s.cfg.fault}, s.kit.Registry)
		s.mu.Lock()
		s.relay = relay
		s.mu.Unlock()
		s.kit.Logger.Info("media port bound", "addr", conn.LocalAddr().String())
		go func() {
			if err := relay.Serve(); err != nil {
				relayErr <- err
			}
		}()
		return nil
	})
	if conn != nil {
		_ = conn.Close()
	}
}

func (s *Service) heartbeat(ctx context.Context) {
	if s.cfg.MCPeers == "" {
		s.heartbeatTo(ctx, s.mc, s.kit.Logger)
		return
	}
	s.heartbeatPeers(ctx)
}

// heartbeatPeers keeps one heartbeat per address MH_MC_PEERS resolves to,
// started and stopped as MCs come and go (re-resolved every interval).
func (s *Service) heartbeatPeers(ctx context.Context) {
	u, err := url.Parse(s.cfg.MCURL)
	if err != nil {
		s.kit.Logger.Error("MH_MC_URL", "error", err.Error())
		return
	}
	port := u.Port()
	if port == "" {
		port = "443"
	}
	mcAddr := net.JoinHostPort(u.Hostname(), port)
	running := map[string]context.CancelFunc{}
	defer func() {
		for _, stop := range running {
			stop()
		}
	}()
	logged := false
	// A new MC waits for an MH before it goes into service (its warm-up):
	// find it, and register with it, within a couple of seconds.
	every := min(s.cfg.HeartbeatInterval, peerDiscovery)
	opskit.Every(ctx, every, every, func(ctx context.Context) error {
		addrs, err := s.lookupHost(ctx, s.cfg.MCPeers)
		if err != nil {
			if !logged {
				s.kit.Logger.Warn("resolving MH_MC_PEERS failed; retrying every interval", "name", s.cfg.MCPeers, "error", err.Error())
				logged = true
			}
			return err
		}
		logged = false
		seen := map[string]bool{}
		for _, ip := range addrs {
			seen[ip] = true
			if running[ip] != nil {
				continue
			}
			bctx, stop := context.WithCancel(ctx)
			running[ip] = stop
			client := authn.NewServiceClient(opskit.PinnedClient(s.kit.HTTPClient, mcAddr, net.JoinHostPort(ip, port)),
				s.cfg.TokenURL, s.cfg.ClientID, s.cfg.ClientSecret, s.cfg.MCAudience)
			s.peers.Store(ip, client)
			go s.heartbeatTo(bctx, client, s.kit.Logger.With("mc_addr", ip))
		}
		for ip, stop := range running {
			if !seen[ip] {
				stop()
				delete(running, ip)
				s.peers.Delete(ip)
			}
		}
		return nil
	})
}

// peerDiscovery bounds how long MH takes to find a new MC (MH_MC_PEERS)
// and, while that MC refuses (not yet registered with GC), to try again.
const peerDiscovery = 2 * time.Second

func (s *Service) heartbeatTo(ctx context.Context, client *authn.ServiceClient, logger *slog.Logger) {
	authn.Heartbeat{
		Client: client, URL: s.cfg.MCURL + "/v1/media-handlers", Interval: s.cfg.HeartbeatInterval,
		Retry: min(s.cfg.HeartbeatInterval, peerDiscovery),
		Body: func() (any, error) {
			if s.draining.Load() {
				return nil, errDraining
			}
			if s.currentRelay() == nil {
				return nil, errors.New("media port not bound")
			}
			u := s.meter.Utilization(time.Now())
			return wire.MHRegistration{ID: s.cfg.ID, MediaAddr: s.cfg.AdvertiseMediaAddr, Endpoint: s.cfg.AdvertiseURL,
				Utilization: u, Admitting: s.thresholds().Admits(u)}, nil
		},
		Reply: func(body json.RawMessage) error {
			var reply wire.MHRegistrationReply
			if err := json.Unmarshal(body, &reply); err != nil {
				return fmt.Errorf("MC's registration reply: %w", err)
			}
			k, err := mticket.DecodeKey(reply.TicketKey.KeyID, reply.TicketKey.Secret)
			if err != nil {
				return fmt.Errorf("MC's registration reply: %w", err)
			}
			s.keys.Add(k, time.Now())
			return nil
		},
		Fresh: &s.mcReg, Results: s.beats, Logger: logger,
	}.Run(ctx)
}

var errDraining = errors.New("shutting down: deregistered")

// Deregister (at shutdown): no more heartbeats, and every MC this MH is
// registered with forgets it, so no new session is placed on it. Live
// sessions keep relaying through the drain.
func (s *Service) Deregister(ctx context.Context) {
	s.draining.Store(true)
	u := s.cfg.MCURL + "/v1/media-handlers/" + url.PathEscape(s.cfg.ID)
	clients := map[string]*authn.ServiceClient{}
	if s.cfg.MCPeers == "" {
		clients[s.cfg.MCURL] = s.mc
	}
	s.peers.Range(func(k, v any) bool {
		clients[k.(string)] = v.(*authn.ServiceClient)
		return true
	})
	var wg sync.WaitGroup
	for addr, c := range clients {
		wg.Go(func() {
			if err := c.Delete(ctx, u); err != nil {
				s.kit.Logger.Warn("deregistering from MC failed; it drops this MH after its TTL", "mc_addr", addr, "error", err.Error())
				return
			}
			s.kit.Logger.Info("deregistered from MC", "mc_addr", addr)
		})
	}
	wg.Wait()
}

// Close is a no-op: Run closes the socket when its context ends.
func (s *Service) Close() {}

// Load is what GET /v1/load reports to MC.
type Load struct {
	Utilization  float64 `json:"utilization"`
	State        string  `json:"state"`
	Admitting    bool    `json:"admitting"`
	Sessions     int     `json:"sessions"`
	Participants int     `json:"participants"`
}

// Routes: MH's API (reached by MC over HTTPS) reports load for placement.
func (s *Service) Routes(mux *opskit.Mux) {
	mux.HandleFunc("GET /v1/load", func(w http.ResponseWriter, _ *http.Request) {
		u := s.meter.Utilization(time.Now())
		th := s.thresholds()
		l := Load{Utilization: u, State: th.State(u).String(), Admitting: th.Admits(u) && s.mcFresh()}
		if r := s.currentRelay(); r != nil {
			l.Sessions, l.Participants = r.Counts()
		}
		wire.WriteJSON(w, http.StatusOK, l)
	})
}
