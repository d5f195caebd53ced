//go:build chaosfragile

package ac

import (
	"context"
	"errors"
	"time"
)

// fragileForgetsKey is a fault knob for the chaos stage's own test: built
// with -tags chaosfragile, ac-service rotates its signing key each time it
// starts, as a replica that could not keep its key would have to. The
// rotation is a correct one (the next key is published for a reload and
// more before it signs, so every token still verifies): the damage is the
// changed kid itself, which the ac-service pod-delete experiment must
// catch. The pipeline refuses to push or release a build made with
// --go-tags.
const fragileForgetsKey = true

// forgetKey schedules the next key, active after lead (RotationLead).
func (s *Store) forgetKey(ctx context.Context, lead time.Duration) error {
	_, _, err := s.Rotate(ctx, lead)
	if errors.Is(err, ErrRotationPending) {
		return nil // another replica's start did it
	}
	return err
}
