//go:build tools

// Package tools pins the Dagger codegen that make dagger-check builds: the
// same version as the engine in dagger.json. Only the go command reads
// this module; nothing imports it.
package tools

import _ "github.com/dagger/dagger/cmd/codegen"
