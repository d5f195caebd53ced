// Package policy holds the checks that keep infra/ true to ADR-0012: it
// renders every kustomization with kustomize's own API, decodes each object
// strictly into its typed Go API (unknown fields fail), and computes what
// the rendered NetworkPolicies let through. The tests in this module run
// the checks against the repository's infra/ tree; the pipeline can run the
// same checks on a rendered overlay before deploying it.
package policy
