// Package helm only exists so `go mod tidy` keeps helm's module in go.mod.
package helm

import _ "helm.sh/helm/v3/pkg/action"
