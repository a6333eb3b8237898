// Package node only exists so `go mod tidy` keeps the node commands' dependencies
// (scripts/build-node.sh builds k8s.io/kubernetes/cmd/kubelet and cmd/kube-proxy).
package node

import (
	_ "k8s.io/kubernetes/cmd/kube-proxy/app"
	_ "k8s.io/kubernetes/cmd/kubelet/app"
)
