// Package modcheck holds tests that read the Dagger module's source
// (../main.go) as the Dagger codegen does: its package main cannot be
// tested directly, since the generated bindings connect to an engine when
// loaded.
package modcheck
