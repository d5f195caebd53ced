//go:build chaosfragile

package mc

// fragileRedis is a fault knob for the chaos stage's own test: built with
// -tags chaosfragile, meeting-controller never recovers from a Redis
// outage (as if it never reconnected), which the Redis pod-delete
// experiment must catch. The pipeline refuses to push or release a build
// made with --go-tags.
const fragileRedis = true
