//go:build tools

// Package tools pins the Helm command built by build.sh so that `go mod tidy` keeps it (and its
// dependencies) in go.mod/go.sum.
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
