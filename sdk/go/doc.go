// Package meshplane is the Go SDK of Meshplane, a gRPC agent mesh.
//
// An [Agent] serves capabilities: it opens one bidirectional stream to the control plane,
// registers, heartbeats, runs the tasks it is assigned (at most its max concurrency at a
// time), reports progress and results, reconnects with jittered exponential backoff keeping
// the tasks it still runs, and drains gracefully on shutdown. A [Client] submits tasks (one
// at a time or as an atomic batch), watches, waits for, cancels and re-submits them, lists
// tasks, agents, instances and channels, drains instances, publishes and subscribes to
// channels, reads and writes the state store, and reads the audit trail.
//
//	agent, err := meshplane.NewAgent("greeter")
//	if err != nil {
//		log.Fatal(err)
//	}
//	agent.Handle("greet", meshplane.Typed(func(ctx context.Context, t *meshplane.Task, in struct{ Name string }) (map[string]string, error) {
//		return map[string]string{"greeting": "hello " + in.Name}, nil
//	}))
//	if err := meshplane.RunWithSignals(agent, "127.0.0.1:50051"); err != nil {
//		log.Fatal(err) // nil after a clean drain (SIGTERM/SIGINT): only a real failure exits 1
//	}
//
// A [Client] given no target ([NewClient] with "") connects to the MESHPLANE_TARGET
// environment variable, or to [DefaultTarget] (127.0.0.1:50051); without [WithToken] it sends
// the MESHPLANE_TOKEN environment variable as its bearer token, when that is set — as the
// Python and TypeScript SDKs and the meshplane CLI do.
//
// The wire protocol is docs/agent-link.md in the Meshplane repository; every SDK follows it.
package meshplane
