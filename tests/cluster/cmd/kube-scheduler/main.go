// Thin wrapper around the upstream main package of the same name, so that the
// real program can be built from published Go modules (see ../../go.mod).
// Mirrors k8s.io/kubernetes/cmd/kube-scheduler/scheduler.go at the version pinned in go.mod.

package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register" // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo"
	_ "k8s.io/component-base/metrics/prometheus/version" // for version metric registration
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	command := app.NewSchedulerCommand()
	code := cli.Run(command)
	os.Exit(code)
}
