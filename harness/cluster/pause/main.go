// Command pause is the local cluster's sandbox ("pause") image: it holds a
// pod's namespaces and does nothing until it is told to stop. Built FROM
// scratch by the cluster, so no image is ever pulled.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
