package authn

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/darktower/delivery/services/internal/envconf"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// ServiceClient calls another service's API with an access token obtained
// from AC by the OAuth 2.0 client-credentials grant (HTTP Basic client
// authentication); tokens are cached until shortly before they expire.
type ServiceClient struct {
	http   *http.Client
	tokens oauth2.TokenSource
}

// NewServiceClient builds a client whose tokens are issued for audience.
func NewServiceClient(httpClient *http.Client, tokenURL, clientID string, secret envconf.Secret, audience string) *ServiceClient {
	cc := clientcredentials.Config{
		ClientID:       clientID,
		ClientSecret:   secret.Reveal(),
		TokenURL:       tokenURL,
		EndpointParams: map[string][]string{"audience": {audience}},
		AuthStyle:      oauth2.AuthStyleInHeader,
	}
	ctx := context.WithValue(context.Background(), oauth2.HTTPClient, httpClient)
	return &ServiceClient{http: httpClient, tokens: cc.TokenSource(ctx)}
}

// CloseIdleConnections closes the pooled connections that carry no request
// (the HTTP client's, shared with whoever else uses it): the next call dials
// afresh.
func (c *ServiceClient) CloseIdleConnections() { c.http.CloseIdleConnections() }

// Token obtains an access token (from AC, or the cached one while fresh).
func (c *ServiceClient) Token() (*oauth2.Token, error) { return c.tokens.Token() }

// BearerToken returns the access token's value (for a client that sets
// the header itself, e.g. the flag client's WebSocket handshake).
func (c *ServiceClient) BearerToken(context.Context) (string, error) {
	tok, err := c.tokens.Token()
	if err != nil {
		return "", err
	}
	return tok.AccessToken, nil
}

// StatusError is a non-2xx answer from a peer.
type StatusError struct {
	URL  string
	Code int
}

func (e *StatusError) Error() string { return fmt.Sprintf("%s answered %d", e.URL, e.Code) }

// PostJSON sends body as JSON with a bearer token and decodes a 2xx answer
// into out (when non-nil).
func (c *ServiceClient) PostJSON(ctx context.Context, url string, body, out any) error {
	payload, err := json.Marshal(body)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, url, bytes.NewReader(payload), out)
}

// Delete sends DELETE to url with a bearer token; a 2xx or 404 (already
// gone) answer is success.
func (c *ServiceClient) Delete(ctx context.Context, url string) error {
	err := c.do(ctx, http.MethodDelete, url, nil, nil)
	var se *StatusError
	if errors.As(err, &se) && se.Code == http.StatusNotFound {
		return nil
	}
	return err
}

// GetJSON GETs url with a bearer token and decodes a 2xx answer into out.
func (c *ServiceClient) GetJSON(ctx context.Context, url string, out any) error {
	return c.do(ctx, http.MethodGet, url, nil, out)
}

func (c *ServiceClient) do(ctx context.Context, method, url string, body io.Reader, out any) error {
	tok, err := c.tokens.Token()
	if err != nil {
		return fmt.Errorf("obtaining access token: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	tok.SetAuthHeader(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return &StatusError{URL: url, Code: resp.StatusCode}
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out)
}
