//go:build !chaosfragile

package ac

import (
	"context"
	"time"
)

// fragileForgetsKey is off in every real build (see fragile_on.go).
const fragileForgetsKey = false

// forgetKey is never called outside a chaosfragile build.
func (s *Store) forgetKey(context.Context, time.Duration) error { return nil }
