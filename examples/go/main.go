// Command example is a minimal Meshplane agent written with the Go SDK.
//
//	meshplane up --demo          # in one terminal: the mesh
//	cd examples/go && go run .   # in another: this agent
//	meshplane task submit go.greet -i '{"name": "Ada"}' --wait
//	meshplane task submit go.countdown -i '{"from": 5}' --wait
//
// The target is 127.0.0.1:50051 unless -target or MESHPLANE_TARGET says otherwise. Ctrl-C
// drains the agent: running tasks finish and their results are delivered before it exits.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	meshplane "github.com/meshplane/meshplane/sdk/go"
)

type greetInput struct {
	Name string `json:"name"`
}

type countdownInput struct {
	From int `json:"from"`
}

func main() {
	target := flag.String("target", envOr("MESHPLANE_TARGET", "127.0.0.1:50051"), "control plane address")
	flag.Parse()

	agent, err := meshplane.NewAgent("go-example",
		meshplane.WithVersion("0.1.0"),
		meshplane.WithMaxConcurrency(8),
		meshplane.WithLabels(map[string]string{"lang": "go"}),
		meshplane.WithToken(os.Getenv("MESHPLANE_TOKEN")),
	)
	if err != nil {
		log.Fatal(err)
	}

	// A typed handler: the input is decoded into greetInput (bad input fails "validation_failed").
	agent.Handle("go.greet", meshplane.Typed(func(ctx context.Context, t *meshplane.Task, in greetInput) (map[string]string, error) {
		if in.Name == "" {
			return nil, meshplane.NonRetryable("missing_name", "input needs a name")
		}
		return map[string]string{"greeting": fmt.Sprintf("Hello, %s! (from Go, attempt %d)", in.Name, t.Attempt)}, nil
	}))

	// Progress and cancellation: ctx is cancelled if a client cancels the task.
	agent.Handle("go.countdown", meshplane.Typed(func(ctx context.Context, t *meshplane.Task, in countdownInput) (map[string]int, error) {
		for i := in.From; i > 0; i-- {
			t.Progress(float64(in.From-i)/float64(in.From), fmt.Sprintf("%d...", i))
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-time.After(time.Second):
			}
		}
		return map[string]int{"counted": in.From}, nil
	}))

	log.Printf("go-example agent (instance %s) serving go.greet and go.countdown on %s", agent.InstanceID(), *target)
	if err := meshplane.RunWithSignals(agent, *target); err != nil {
		log.Fatal(err)
	}
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}
