package authn

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/darktower/delivery/services/internal/opskit"
	"github.com/golang-jwt/jwt/v5"
)

// KeySet caches AC's JWKS: refreshed every RefreshInterval, and on demand
// (at most once per MinRefetch) when a token names an unknown kid, so key
// rotation needs no restart.
type KeySet struct {
	URL             string
	Client          *http.Client
	RefreshInterval time.Duration
	MinRefetch      time.Duration
	Logger          *slog.Logger

	mu           sync.Mutex
	keys         map[string]ed25519.PublicKey
	lastOnDemand time.Time
	fresh        opskit.Freshness
}

// Refresh fetches and parses the key set; on failure the old keys stay.
func (k *KeySet) Refresh(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.URL, nil)
	if err != nil {
		return err
	}
	resp, err := k.Client.Do(req)
	if err != nil {
		return fmt.Errorf("fetching JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("fetching JWKS: status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("reading JWKS: %w", err)
	}
	keys, err := ParseJWKS(body)
	if err != nil {
		return err
	}
	k.mu.Lock()
	k.keys = keys
	k.mu.Unlock()
	k.fresh.Mark(time.Now())
	return nil
}

// Run refreshes periodically until ctx ends, retrying every second until the
// first success.
func (k *KeySet) Run(ctx context.Context) {
	opskit.Every(ctx, k.RefreshInterval, time.Second, func(ctx context.Context) error {
		err := k.Refresh(ctx)
		if err != nil && k.Logger != nil && ctx.Err() == nil {
			k.Logger.Warn("JWKS refresh failed", "url", k.URL, "error", err.Error())
		}
		return err
	})
}

// Fresh returns nil when the key set was fetched within maxAge.
func (k *KeySet) Fresh(maxAge time.Duration) error {
	return k.fresh.Within(maxAge, time.Now())
}

// Key returns the public key for kid, refetching once for an unknown kid.
func (k *KeySet) Key(ctx context.Context, kid string) (ed25519.PublicKey, error) {
	k.mu.Lock()
	key, ok := k.keys[kid]
	// Only on-demand fetches count against MinRefetch: the periodic loop's
	// retries must not stop the first token after AC comes up from fetching.
	canRefetch := !ok && time.Since(k.lastOnDemand) >= k.MinRefetch
	if canRefetch {
		k.lastOnDemand = time.Now()
	}
	k.mu.Unlock()
	if ok {
		return key, nil
	}
	if canRefetch {
		if err := k.Refresh(ctx); err != nil {
			return nil, err
		}
		k.mu.Lock()
		key, ok = k.keys[kid]
		k.mu.Unlock()
		if ok {
			return key, nil
		}
	}
	return nil, fmt.Errorf("unknown key id %q", kid)
}

// Verifier checks access tokens for one audience.
type Verifier struct {
	Keys     *KeySet
	Issuer   string
	Audience string
	Leeway   time.Duration
	Now      func() time.Time // nil: time.Now
}

// ErrNoToken means the request carried no bearer token.
var ErrNoToken = errors.New("no bearer token")

// Verify returns the token's claims when signature, algorithm, issuer,
// audience and lifetime all check out.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Claims, error) {
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{jwt.SigningMethodEdDSA.Alg()}),
		jwt.WithIssuer(v.Issuer),
		jwt.WithAudience(v.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(v.Leeway),
	}
	if v.Now != nil {
		opts = append(opts, jwt.WithTimeFunc(v.Now))
	}
	claims := &Claims{}
	_, err := jwt.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, errors.New("token has no kid")
		}
		return v.Keys.Key(ctx, kid)
	}, opts...)
	if err != nil {
		return nil, err
	}
	if exp, iat := claims.ExpiresAt, claims.IssuedAt; iat == nil || exp.Sub(iat.Time) > MaxTokenTTL {
		return nil, fmt.Errorf("token lifetime exceeds %s", MaxTokenTTL)
	}
	return claims, nil
}

type claimsKey struct{}

// ClaimsFrom returns the verified claims stored by Require.
func ClaimsFrom(ctx context.Context) *Claims {
	c, _ := ctx.Value(claimsKey{}).(*Claims)
	return c
}

// Require wraps h so only requests with a valid bearer token reach it.
// Refusals are 401 with no detail for the caller; the reason is logged at
// debug level without the token.
func (v *Verifier) Require(log *slog.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, ok := bearer(r)
		var claims *Claims
		err := ErrNoToken
		if ok {
			claims, err = v.Verify(r.Context(), raw)
		}
		if err != nil {
			log.Debug("refused request", "route", r.Pattern, "reason", err.Error())
			w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			http.Error(w, `{"error":"invalid_token"}`, http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), claimsKey{}, claims)))
	})
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", false
	}
	return strings.TrimSpace(tok), true
}
