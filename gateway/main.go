// Command meshplane-gateway is Meshplane's REST bridge: a grpc-gateway v2
// reverse proxy from HTTP/JSON to the control plane's gRPC API. See README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/meshplane/meshplane/gateway/internal/config"
	"github.com/meshplane/meshplane/gateway/internal/server"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	cfg, err := config.Parse(args, os.LookupEnv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "meshplane-gateway:", err)
		return 2
	}
	logger := newLogger(cfg, os.Stderr)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := server.Run(ctx, cfg, logger, os.Stdout); err != nil {
		logger.Error("gateway failed", "error", err)
		return 1
	}
	return 0
}
