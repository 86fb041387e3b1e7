// Thin wrapper around the upstream main package of the same name, so that the
// real program can be built from published Go modules (see ../../go.mod).
// Mirrors go.etcd.io/etcd/server/v3/main.go at the version pinned in go.mod.

package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
