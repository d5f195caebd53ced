//go:build !canaryfault

package opskit

import (
	"log/slog"
	"net/http"

	"github.com/darktower/delivery/services/internal/envconf"
)

// apiFault is off in every real build (see fault_on.go): nothing is read
// from the environment, and the API's mux is served as it is.
type apiFault struct{}

func loadAPIFault(*envconf.Loader) apiFault { return apiFault{} }

func (apiFault) announce(*slog.Logger) {}

func (apiFault) wrap(mux *http.ServeMux) http.Handler { return mux }
