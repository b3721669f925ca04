// Command client submits tasks with the Go SDK's client and waits for their results.
//
//	cd examples/go && go run ./client             # go.greet (needs the example agent running)
//	go run ./client -capability demo.echo -input '{"hi": 1}'
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	meshplane "github.com/meshplane/meshplane/sdk/go"
)

func main() {
	target := flag.String("target", envOr("MESHPLANE_TARGET", "127.0.0.1:50051"), "control plane address")
	capability := flag.String("capability", "go.greet", "the capability to run")
	input := flag.String("input", `{"name": "Ada"}`, "the task input (JSON)")
	timeout := flag.Duration("timeout", 30*time.Second, "give up after this long")
	flag.Parse()

	client, err := meshplane.NewClient(*target, meshplane.WithToken(os.Getenv("MESHPLANE_TOKEN")))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	task, err := client.Run(ctx, *capability, json.RawMessage(*input), meshplane.WithMaxAttempts(3))
	var failed *meshplane.TaskFailedError
	switch {
	case errors.As(err, &failed):
		log.Fatalf("task %s ended %s: %+v", failed.Task.ID, failed.Task.State, failed.Task.Error)
	case err != nil:
		log.Fatal(err)
	}
	fmt.Printf("task %s %s after %d attempt(s): %s\n", task.ID, task.State, task.Attempt, task.Output)
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
