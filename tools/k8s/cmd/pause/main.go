// Command pause is the sandbox ("pause") container of the test node: PID 1 of every pod's
// sandbox. It holds the pod's namespaces open, reaps children re-parented to it, and exits
// on SIGTERM or SIGINT. Built static (CGO_ENABLED=0) so the image is this one file.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	signals := make(chan os.Signal, 8)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for sig := range signals {
		if sig != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var status syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &status, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
