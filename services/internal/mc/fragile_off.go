//go:build !chaosfragile

package mc

// fragileRedis is off in every real build (see fragile_on.go).
const fragileRedis = false
