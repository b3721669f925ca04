// Command meshplane-conformance is the Go SDK's conformance agent: the behaviour fixed by
// tests/conformance/CONTRACT.md, built with the SDK's public API only.
//
//	meshplane-conformance --target HOST:PORT --name NAME --instance-id ID --max-concurrency N [--token TOKEN]
//	                      [--drain-timeout SECONDS]
//
// It prints "READY <instance-id>" once registered and "STOPPED" after a graceful shutdown on
// SIGTERM/SIGINT; logs go to stderr.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	meshplane "github.com/meshplane/meshplane/sdk/go"
)

const language = "go"

// Flaky is the error conf.flaky fails with: an ordinary (retryable) error whose code is its
// type name, "Flaky".
type Flaky struct{ Attempt int }

func (e *Flaky) Error() string { return fmt.Sprintf("attempt %d fails on purpose", e.Attempt) }

type object = map[string]any

func main() {
	target := flag.String("target", "127.0.0.1:50051", "control plane address HOST:PORT")
	name := flag.String("name", "conformance-go", "agent name")
	instanceID := flag.String("instance-id", "", "instance id (default: generated)")
	maxConcurrency := flag.Int("max-concurrency", 4, "tasks run at once")
	token := flag.String("token", "", "bearer token")
	drainTimeout := flag.Float64("drain-timeout", 30, "seconds a graceful shutdown lets tasks finish")
	flag.Parse()

	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	opts := []meshplane.Option{
		meshplane.WithVersion(meshplane.Version),
		meshplane.WithMaxConcurrency(*maxConcurrency),
		meshplane.WithLabels(map[string]string{"lang": language}),
		meshplane.WithLogger(logger),
		meshplane.WithDrainTimeout(time.Duration(*drainTimeout * float64(time.Second))),
	}
	if *instanceID != "" {
		opts = append(opts, meshplane.WithInstanceID(*instanceID))
	}
	if *token != "" {
		opts = append(opts, meshplane.WithToken(*token))
	}
	agent, err := meshplane.NewAgent(*name, opts...)
	if err != nil {
		logger.Error("bad arguments", "error", err)
		os.Exit(2)
	}
	register(agent)

	go func() {
		<-agent.Ready()
		fmt.Printf("READY %s\n", agent.InstanceID())
	}()
	if err := meshplane.RunWithSignals(agent, *target); err != nil {
		logger.Error("agent failed", "error", err)
		os.Exit(1)
	}
	fmt.Println("STOPPED")
}

func register(agent *meshplane.Agent) {
	agent.Handle("conf.echo", func(ctx context.Context, t *meshplane.Task) (any, error) {
		return t.Input, nil
	})

	agent.Handle("conf.progress", meshplane.Typed(func(ctx context.Context, t *meshplane.Task, in struct {
		Steps int `json:"steps"`
	}) (object, error) {
		for i := 1; i <= in.Steps; i++ {
			t.Progress(float64(i)/float64(in.Steps), fmt.Sprintf("step %d", i))
		}
		return object{"steps": in.Steps}, nil
	}))

	agent.Handle("conf.flaky", meshplane.Typed(func(ctx context.Context, t *meshplane.Task, in struct {
		FailTimes int `json:"fail_times"`
	}) (object, error) {
		if t.Attempt <= in.FailTimes {
			return nil, &Flaky{Attempt: t.Attempt}
		}
		return object{"attempt": t.Attempt}, nil
	}))

	agent.Handle("conf.fatal", func(ctx context.Context, t *meshplane.Task) (any, error) {
		return nil, meshplane.NonRetryable("Fatal", "fatal")
	})

	agent.Handle("conf.sleep", meshplane.Typed(func(ctx context.Context, t *meshplane.Task, in struct {
		Seconds float64 `json:"seconds"`
	}) (object, error) {
		if err := sleep(ctx, in.Seconds); err != nil {
			return nil, err // cancelled: the SDK reports the cancellation
		}
		return object{"slept": in.Seconds}, nil
	}))

	agent.Handle("conf.sleep_first", meshplane.Typed(func(ctx context.Context, t *meshplane.Task, in struct {
		Seconds float64 `json:"seconds"`
	}) (object, error) {
		if t.Attempt == 1 {
			if err := sleep(ctx, in.Seconds); err != nil {
				return nil, err // cancelled: the SDK reports the cancellation
			}
		}
		return object{"attempt": t.Attempt}, nil
	}))

	agent.Handle("conf.await_cancel", meshplane.Typed(func(ctx context.Context, t *meshplane.Task, in struct {
		Channel string  `json:"channel"`
		Seconds float64 `json:"seconds"`
	}) (object, error) {
		if err := sleep(ctx, in.Seconds); err == nil {
			return object{"cancelled": false}, nil
		}
		// Cancelled: say what the handler was told, then let the SDK report the cancellation.
		seen := object{"task_id": t.ID, "attempt": t.Attempt, "reason": t.CancelReason(), "message": t.CancelMessage()}
		if err := t.Publish(in.Channel, seen); err != nil {
			return nil, err
		}
		return nil, context.Cause(ctx)
	}))

	var mu sync.Mutex
	current, peak := 0, 0
	agent.Handle("conf.concurrency", meshplane.Typed(func(ctx context.Context, t *meshplane.Task, in struct {
		Hold float64 `json:"hold"`
	}) (object, error) {
		mu.Lock()
		current++
		peak = max(peak, current)
		mu.Unlock()
		defer func() {
			mu.Lock()
			current--
			mu.Unlock()
		}()
		if err := sleep(ctx, in.Hold); err != nil {
			return nil, err
		}
		mu.Lock()
		defer mu.Unlock()
		return object{"peak": peak}, nil
	}))

	agent.Handle("conf.publish", meshplane.Typed(func(ctx context.Context, t *meshplane.Task, in struct {
		Channel string            `json:"channel"`
		Data    json.RawMessage   `json:"data"`
		Headers map[string]string `json:"headers"`
	}) (object, error) {
		if err := publishOrFail(agent, in.Channel, in.Data, in.Headers); err != nil {
			return nil, err
		}
		return object{}, nil
	}))

	agent.Handle("conf.publish_large", meshplane.Typed(func(ctx context.Context, t *meshplane.Task, in struct {
		Channel string `json:"channel"`
		Bytes   int    `json:"bytes"`
	}) (object, error) {
		if err := publishOrFail(agent, in.Channel, jsonTextOf(in.Bytes), nil); err != nil {
			return nil, err
		}
		return object{}, nil
	}))

	agent.Handle("conf.publish_nested", meshplane.Typed(func(ctx context.Context, t *meshplane.Task, in struct {
		Channel string `json:"channel"`
		Depth   int    `json:"depth"`
	}) (object, error) {
		var value any = 1
		for range in.Depth {
			value = []any{value}
		}
		if err := publishOrFail(agent, in.Channel, value, nil); err != nil {
			return nil, err
		}
		return object{}, nil
	}))

	agent.Handle("conf.output_large", meshplane.Typed(func(ctx context.Context, t *meshplane.Task, in struct {
		Bytes int `json:"bytes"`
	}) (string, error) {
		return jsonTextOf(in.Bytes), nil
	}))

	agent.Handle("conf.state_cas", meshplane.Typed(func(ctx context.Context, t *meshplane.Task, in struct {
		Key string `json:"key"`
	}) (object, error) {
		state := t.State()
		first, err := state.Put(ctx, in.Key, object{"n": 1}, meshplane.IfAbsent())
		if err != nil {
			return nil, err
		}
		conflict := false
		if _, err := state.Put(ctx, in.Key, object{"n": 1}, meshplane.IfAbsent()); errors.Is(err, meshplane.ErrVersionConflict) {
			conflict = true
		} else if err != nil {
			return nil, err
		}
		read, err := state.Get(ctx, in.Key)
		if err != nil {
			return nil, err
		}
		return object{"first_version": first.Version, "conflict": conflict, "read_version": read.Version}, nil
	}))

	agent.Handle("conf.whoami", func(ctx context.Context, t *meshplane.Task) (any, error) {
		return object{"language": language, "instance_id": agent.InstanceID(), "attempt": t.Attempt, "task_id": t.ID}, nil
	})

	agent.OnChannel("conf.broadcast", func(ctx context.Context, m *meshplane.Message) error {
		return agent.Publish("conf.received", object{
			"instance_id": agent.InstanceID(),
			"language":    language,
			"message":     m.Data,
		})
	})
}

// publishOrFail publishes; a publish the SDK refuses at once fails the attempt with the contract's
// code for its kind.
func publishOrFail(agent *meshplane.Agent, channel string, v any, headers map[string]string) error {
	err := agent.PublishWithHeaders(channel, v, headers)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, meshplane.ErrInvalidArgument):
		return meshplane.NonRetryable("invalid_argument", err.Error())
	case errors.Is(err, meshplane.ErrResourceExhausted):
		return meshplane.NonRetryable("resource_exhausted", err.Error())
	}
	return meshplane.Permanent(err)
}

// jsonTextOf is a string whose JSON encoding is size bytes (its quotes included).
func jsonTextOf(size int) string { return strings.Repeat("x", max(size-2, 0)) }

// sleep waits s seconds, or until ctx is done (then it returns ctx's error).
func sleep(ctx context.Context, seconds float64) error {
	timer := time.NewTimer(time.Duration(seconds * float64(time.Second)))
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
