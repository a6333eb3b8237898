// Package etcd only exists so `go mod tidy` keeps etcd's server module in go.mod.
package etcd

import _ "go.etcd.io/etcd/server/v3/etcdmain"
