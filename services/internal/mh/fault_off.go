//go:build !canaryfault

package mh

import (
	"log/slog"
	"time"

	"github.com/darktower/delivery/services/internal/envconf"
)

// mediaFault is off in every real build (see fault_on.go): nothing is read
// from the environment, and every media datagram is forwarded at once.
type mediaFault struct{}

func loadMediaFault(*envconf.Loader) mediaFault { return mediaFault{} }

func (*mediaFault) announce(*slog.Logger) {}

func (*mediaFault) drop() bool { return false }

func (*mediaFault) wait() time.Duration { return 0 }
