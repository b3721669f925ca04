// Command meshplane-conformance-client is the Go SDK's mixed-language conformance client: the
// command line fixed by tests/conformance/CONTRACT.md ("Mixed-language clients"), built with the
// SDK's public client API only (NewClient, Submit, SubmitMany, Resubmit, Wait, ListTasksPage,
// ListAgents, ListInstances, ListChannels, ListAuditEntries, Publish, Subscribe).
//
//	meshplane-conformance-client --target HOST:PORT [--token TOKEN] submit --capability C --input JSON
//	    [--count N] [--batch] [--correlation-id X] [--label-selector K=V[,K=V...]] [--timeout SECONDS]
//	meshplane-conformance-client --target HOST:PORT [--token TOKEN] resubmit --task-id ID [--timeout SECONDS]
//	meshplane-conformance-client --target HOST:PORT [--token TOKEN] list-tasks [--capability C] [--state S]
//	    [--correlation-id X] [--page-size N]
//	meshplane-conformance-client --target HOST:PORT [--token TOKEN] list-agents [--capability C]
//	meshplane-conformance-client --target HOST:PORT [--token TOKEN] list-instances [--agent NAME]
//	meshplane-conformance-client --target HOST:PORT [--token TOKEN] list-channels
//	meshplane-conformance-client --target HOST:PORT [--token TOKEN] list-audit --resource R [--action A] [--limit N]
//	meshplane-conformance-client --target HOST:PORT [--token TOKEN] publish --channel C --data JSON
//	meshplane-conformance-client --target HOST:PORT [--token TOKEN] subscribe --channel C --count N [--timeout SECONDS]
//
// submit prints one JSON line per task, in submission order; resubmit one line for the new task (with
// "resubmitted_from"); the list commands one line per task, agent, instance, channel or audit entry, in
// the server's order;
// publish prints {"published": C}; subscribe prints {"subscribed": C} once the subscription is live, then
// one line per message as it arrives, until N messages.
// Exit status: 0 success, 1 a task did not succeed, a call failed or the timeout passed, 2 bad usage.
// Logs go to stderr.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	meshplane "github.com/meshplane/meshplane/sdk/go"
)

const usage = `usage: meshplane-conformance-client --target HOST:PORT [--token TOKEN] COMMAND ...
  submit --capability C --input JSON [--count N] [--batch] [--correlation-id X]
         [--label-selector K=V[,K=V...]] [--timeout SECONDS]
  resubmit --task-id ID [--timeout SECONDS]
  list-tasks [--capability C] [--state S] [--correlation-id X] [--page-size N]
  list-agents [--capability C]
  list-instances [--agent NAME]
  list-channels
  list-audit --resource R [--action A] [--limit N]
  publish --channel C --data JSON
  subscribe --channel C --count N [--timeout SECONDS]`

// listTimeout bounds a list command (all its pages).
const listTimeout = 30 * time.Second

// line is what submit prints for one task.
type line struct {
	TaskID          string          `json:"task_id"`
	State           string          `json:"state"`
	Output          json.RawMessage `json:"output,omitempty"`
	Error           *lineError      `json:"error,omitempty"`
	ResubmittedFrom string          `json:"resubmitted_from,omitempty"`
}

type lineError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// taskLine is what list-tasks prints for one task.
type taskLine struct {
	TaskID        string `json:"task_id"`
	State         string `json:"state"`
	Capability    string `json:"capability"`
	CorrelationID string `json:"correlation_id"`
}

// agentLine is what list-agents prints for one agent.
type agentLine struct {
	Name               string   `json:"name"`
	Status             string   `json:"status"`
	ConnectedInstances int      `json:"connected_instances"`
	Capabilities       []string `json:"capabilities"`
}

// instanceLine is what list-instances prints for one instance.
type instanceLine struct {
	InstanceID string            `json:"instance_id"`
	AgentName  string            `json:"agent_name"`
	Status     string            `json:"status"`
	Labels     map[string]string `json:"labels"`
}

// channelLine is what list-channels prints for one channel: whether it has both times, the first
// use no later than the last (not the times themselves, which differ from run to run).
type channelLine struct {
	Name     string `json:"name"`
	HasTimes bool   `json:"has_times"`
}

// auditLine is what list-audit prints for one entry. Details' numbers are float64s, which
// encoding/json prints without a fraction when whole (2, not 2.0), as the other languages do.
type auditLine struct {
	Actor    string         `json:"actor"`
	Action   string         `json:"action"`
	Resource string         `json:"resource"`
	Details  map[string]any `json:"details"`
}

// messageLine is what subscribe prints for one message.
type messageLine struct {
	Channel   string          `json:"channel"`
	Data      json.RawMessage `json:"data"`
	Publisher string          `json:"publisher"`
}

// errEnough ends a subscription once it has received the messages it wanted.
var errEnough = errors.New("received enough messages")

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	global := flag.NewFlagSet("meshplane-conformance-client", flag.ContinueOnError)
	global.Usage = func() { fmt.Fprintln(os.Stderr, usage) }
	target := global.String("target", "", "control plane address HOST:PORT")
	token := global.String("token", "", "bearer token")
	if err := global.Parse(args); err != nil || *target == "" || global.NArg() == 0 {
		global.Usage()
		return 2
	}
	var opts []meshplane.ClientOption
	if *token != "" {
		opts = append(opts, meshplane.WithToken(*token))
	}
	client, err := meshplane.NewClient(*target, opts...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "client: %v\n", err)
		return 1
	}
	defer client.Close()

	command, rest := global.Arg(0), global.Args()[1:]
	switch command {
	case "submit":
		return submit(client, rest)
	case "resubmit":
		return resubmit(client, rest)
	case "list-tasks":
		return listTasks(client, rest)
	case "list-agents":
		return listAgents(client, rest)
	case "list-instances":
		return listInstances(client, rest)
	case "list-channels":
		return listChannels(client, rest)
	case "list-audit":
		return listAudit(client, rest)
	case "publish":
		return publish(client, rest)
	case "subscribe":
		return subscribe(client, rest)
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q\n%s\n", command, usage)
		return 2
	}
}

func submit(client *meshplane.Client, args []string) int {
	fs := newFlagSet("submit")
	capability := fs.String("capability", "", "capability to run")
	input := fs.String("input", "", "task input (JSON)")
	count := fs.Int("count", 1, "number of tasks")
	batch := fs.Bool("batch", false, "submit the tasks in one call (SubmitMany: all or none)")
	correlationID := fs.String("correlation-id", "", "correlation id of every task")
	selector := fs.String("label-selector", "", "K=V[,K=V...]: only agent instances with these labels")
	timeout := fs.Float64("timeout", 30, "seconds to wait for all tasks")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 || *capability == "" || *count < 1 || !json.Valid([]byte(*input)) {
		fs.Usage()
		return 2
	}
	labels, err := parseSelector(*selector)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%v\n%s\n", err, usage)
		return 2
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(*timeout*float64(time.Second)))
	defer cancel()
	var submitOpts []meshplane.SubmitOption
	if len(labels) > 0 {
		submitOpts = append(submitOpts, meshplane.WithLabelSelector(labels))
	}
	if *correlationID != "" {
		submitOpts = append(submitOpts, meshplane.WithCorrelationID(*correlationID))
	}
	ids := make([]string, 0, *count)
	if *batch {
		requests := make([]meshplane.TaskRequest, *count)
		for i := range requests {
			requests[i] = meshplane.NewTaskRequest(*capability, json.RawMessage(*input), submitOpts...)
		}
		tasks, err := client.SubmitMany(ctx, requests)
		if err != nil {
			fmt.Fprintf(os.Stderr, "submit %d x %s (batch): %v\n", *count, *capability, err)
			return 1
		}
		for _, task := range tasks {
			ids = append(ids, task.ID)
		}
	} else {
		for range *count {
			task, err := client.Submit(ctx, *capability, json.RawMessage(*input), submitOpts...)
			if err != nil {
				fmt.Fprintf(os.Stderr, "submit %s: %v\n", *capability, err)
				return 1
			}
			ids = append(ids, task.ID)
		}
	}

	lines := make([]line, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() { lines[i], errs[i] = waitLine(ctx, client, id) })
	}
	wg.Wait()

	code := 0
	out := json.NewEncoder(os.Stdout)
	for i := range lines {
		if errs[i] != nil {
			fmt.Fprintf(os.Stderr, "wait %s: %v\n", ids[i], errs[i])
			return 1
		}
		if err := out.Encode(lines[i]); err != nil {
			fmt.Fprintf(os.Stderr, "stdout: %v\n", err)
			return 1
		}
		if lines[i].State != string(meshplane.TaskSucceeded) {
			code = 1
		}
	}
	return code
}

// waitLine waits for a task through the SDK's wait API and describes how it ended.
func waitLine(ctx context.Context, client *meshplane.Client, id string) (line, error) {
	task, err := client.Wait(ctx, id)
	var failed *meshplane.TaskFailedError
	switch {
	case err == nil:
		return line{TaskID: id, State: string(task.State), Output: task.Output}, nil
	case errors.As(err, &failed):
		l := line{TaskID: id, State: string(failed.Task.State)}
		if e := failed.Task.Error; e != nil {
			l.Error = &lineError{Code: e.Code, Message: e.Message}
		}
		return l, nil
	default:
		return line{}, err
	}
}

func resubmit(client *meshplane.Client, args []string) int {
	fs := newFlagSet("resubmit")
	taskID := fs.String("task-id", "", "the ended task to run again")
	timeout := fs.Float64("timeout", 30, "seconds to wait for the new task")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 || *taskID == "" {
		fs.Usage()
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(*timeout*float64(time.Second)))
	defer cancel()
	task, err := client.Resubmit(ctx, *taskID)
	if err != nil {
		fmt.Fprintf(os.Stderr, "resubmit %s: %v\n", *taskID, err)
		return 1
	}
	l, err := waitLine(ctx, client, task.ID)
	if err != nil {
		fmt.Fprintf(os.Stderr, "wait %s: %v\n", task.ID, err)
		return 1
	}
	l.ResubmittedFrom = task.ResubmittedFrom
	if err := json.NewEncoder(os.Stdout).Encode(l); err != nil {
		fmt.Fprintf(os.Stderr, "stdout: %v\n", err)
		return 1
	}
	if l.State != string(meshplane.TaskSucceeded) {
		return 1
	}
	return 0
}

func listTasks(client *meshplane.Client, args []string) int {
	fs := newFlagSet("list-tasks")
	capability := fs.String("capability", "", "only tasks for this capability")
	stateName := fs.String("state", "", "only tasks in this state (QUEUED, SUCCEEDED, ...)")
	correlationID := fs.String("correlation-id", "", "only tasks with this correlation id")
	pageSize := fs.Int("page-size", 0, "tasks per page (default: the server's)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 || *pageSize < 0 || (isSet(fs, "page-size") && *pageSize == 0) {
		fs.Usage()
		return 2
	}
	filter := meshplane.TaskFilter{Capability: *capability, CorrelationID: *correlationID}
	if isSet(fs, "state") {
		state, err := meshplane.ParseTaskState(*stateName)
		if err != nil {
			fmt.Fprintf(os.Stderr, "bad --state %q: %v\n%s\n", *stateName, err, usage)
			return 2
		}
		filter.State = state
	}
	ctx, cancel := context.WithTimeout(context.Background(), listTimeout)
	defer cancel()
	out := json.NewEncoder(os.Stdout)
	token := ""
	for {
		page, err := client.ListTasksPage(ctx, filter, *pageSize, token)
		if err != nil {
			fmt.Fprintf(os.Stderr, "list-tasks: %v\n", err)
			return 1
		}
		for _, task := range page.Tasks {
			l := taskLine{TaskID: task.ID, State: string(task.State), Capability: task.Capability, CorrelationID: task.CorrelationID}
			if err := out.Encode(l); err != nil {
				fmt.Fprintf(os.Stderr, "stdout: %v\n", err)
				return 1
			}
		}
		if token = page.NextPageToken; token == "" {
			return 0
		}
	}
}

func listAgents(client *meshplane.Client, args []string) int {
	fs := newFlagSet("list-agents")
	capability := fs.String("capability", "", "only agents offering this capability")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), listTimeout)
	defer cancel()
	agents, err := client.ListAgents(ctx, *capability)
	if err != nil {
		fmt.Fprintf(os.Stderr, "list-agents: %v\n", err)
		return 1
	}
	lines := make([]agentLine, len(agents))
	for i, agent := range agents {
		names := make([]string, len(agent.Capabilities))
		for j, c := range agent.Capabilities {
			names[j] = c.Name
		}
		lines[i] = agentLine{Name: agent.Name, Status: string(agent.Status), ConnectedInstances: agent.ConnectedInstances, Capabilities: names}
	}
	return printLines(lines)
}

func listInstances(client *meshplane.Client, args []string) int {
	fs := newFlagSet("list-instances")
	agent := fs.String("agent", "-", `only this agent's instances ("-": every agent's)`)
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), listTimeout)
	defer cancel()
	instances, err := client.ListInstances(ctx, *agent, false)
	if err != nil {
		fmt.Fprintf(os.Stderr, "list-instances: %v\n", err)
		return 1
	}
	lines := make([]instanceLine, len(instances))
	for i, instance := range instances {
		labels := instance.Labels
		if labels == nil {
			labels = map[string]string{}
		}
		lines[i] = instanceLine{InstanceID: instance.InstanceID, AgentName: instance.AgentName, Status: string(instance.Status), Labels: labels}
	}
	return printLines(lines)
}

func listChannels(client *meshplane.Client, args []string) int {
	fs := newFlagSet("list-channels")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 {
		fs.Usage()
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), listTimeout)
	defer cancel()
	channels, err := client.ListChannels(ctx)
	if err != nil {
		fmt.Fprintf(os.Stderr, "list-channels: %v\n", err)
		return 1
	}
	lines := make([]channelLine, len(channels))
	for i, channel := range channels {
		hasTimes := !channel.CreateTime.IsZero() && !channel.LastUseTime.IsZero() && !channel.CreateTime.After(channel.LastUseTime)
		lines[i] = channelLine{Name: channel.Name, HasTimes: hasTimes}
	}
	return printLines(lines)
}

func listAudit(client *meshplane.Client, args []string) int {
	fs := newFlagSet("list-audit")
	resource := fs.String("resource", "", "only entries on this resource (exact)")
	action := fs.String("action", "", "only entries of this action (exact)")
	limit := fs.Int("limit", 50, "at most this many entries")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 || *resource == "" || *limit < 1 {
		fs.Usage()
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), listTimeout)
	defer cancel()
	entries, err := client.ListAuditEntries(ctx, meshplane.AuditFilter{Resource: *resource, Action: *action}, *limit)
	if err != nil {
		fmt.Fprintf(os.Stderr, "list-audit: %v\n", err)
		return 1
	}
	lines := make([]auditLine, len(entries))
	for i, entry := range entries {
		details := entry.Details
		if details == nil {
			details = map[string]any{}
		}
		lines[i] = auditLine{Actor: entry.Actor, Action: entry.Action, Resource: entry.Resource, Details: details}
	}
	return printLines(lines)
}

// printLines prints one JSON line per value; 0, or 1 if stdout failed.
func printLines[T any](lines []T) int {
	out := json.NewEncoder(os.Stdout)
	for _, l := range lines {
		if err := out.Encode(l); err != nil {
			fmt.Fprintf(os.Stderr, "stdout: %v\n", err)
			return 1
		}
	}
	return 0
}

// newFlagSet is a command's flag set: parse errors are returned, with the usage on stderr.
func newFlagSet(command string) *flag.FlagSet {
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprintln(os.Stderr, usage) }
	return fs
}

// isSet says whether the flag was given on the command line.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func publish(client *meshplane.Client, args []string) int {
	fs := newFlagSet("publish")
	channel := fs.String("channel", "", "channel to publish on")
	data := fs.String("data", "", "message (JSON)")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 || *channel == "" || !json.Valid([]byte(*data)) {
		fs.Usage()
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := client.Publish(ctx, *channel, json.RawMessage(*data)); err != nil {
		fmt.Fprintf(os.Stderr, "publish %s: %v\n", *channel, err)
		return 1
	}
	if err := json.NewEncoder(os.Stdout).Encode(map[string]string{"published": *channel}); err != nil {
		fmt.Fprintf(os.Stderr, "stdout: %v\n", err)
		return 1
	}
	return 0
}

func subscribe(client *meshplane.Client, args []string) int {
	fs := newFlagSet("subscribe")
	channel := fs.String("channel", "", "channel to subscribe to")
	count := fs.Int("count", 0, "number of messages to receive")
	timeout := fs.Float64("timeout", 30, "seconds to wait for all messages")
	if err := fs.Parse(args); err != nil || fs.NArg() != 0 || *channel == "" || *count < 1 {
		fs.Usage()
		return 2
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(*timeout*float64(time.Second)))
	defer cancel()
	out := json.NewEncoder(os.Stdout)

	// Subscribe closes ready (in its own goroutine, before calling fn with any message) once the
	// subscription is live; the subscribed line is printed from here, and fn waits for it so that
	// it comes first.
	ready := make(chan struct{})
	announced := make(chan struct{})
	var announceErr error
	go func() {
		defer close(announced)
		select {
		case <-ready:
		case <-ctx.Done():
			return
		}
		if announceErr = out.Encode(map[string]string{"subscribed": *channel}); announceErr != nil {
			cancel()
		}
	}()

	received := 0
	err := client.Subscribe(ctx, *channel, ready, func(msg *meshplane.Message) error {
		<-announced
		if announceErr != nil {
			return announceErr
		}
		var data json.RawMessage
		if err := msg.Decode(&data); err != nil {
			return fmt.Errorf("message %s: %w", msg.ID, err)
		}
		if err := out.Encode(messageLine{Channel: msg.Channel, Data: data, Publisher: msg.Publisher}); err != nil {
			return fmt.Errorf("stdout: %w", err)
		}
		if received++; received == *count {
			return errEnough
		}
		return nil
	})
	timedOut := errors.Is(ctx.Err(), context.DeadlineExceeded)
	cancel()
	<-announced

	switch {
	case errors.Is(err, errEnough):
		return 0
	case announceErr != nil:
		fmt.Fprintf(os.Stderr, "stdout: %v\n", announceErr)
	case timedOut:
		fmt.Fprintf(os.Stderr, "subscribe %s: timed out after %gs with %d of %d messages\n", *channel, *timeout, received, *count)
	case err == nil:
		fmt.Fprintf(os.Stderr, "subscribe %s: subscription ended after %d of %d messages\n", *channel, received, *count)
	default:
		fmt.Fprintf(os.Stderr, "subscribe %s: %v\n", *channel, err)
	}
	return 1
}

// parseSelector parses "k=v,k2=v2" ("" is no selector).
func parseSelector(s string) (map[string]string, error) {
	labels := map[string]string{}
	if s == "" {
		return labels, nil
	}
	for pair := range strings.SplitSeq(s, ",") {
		key, value, ok := strings.Cut(pair, "=")
		if !ok || key == "" {
			return nil, fmt.Errorf("bad --label-selector %q: want K=V[,K=V...]", s)
		}
		labels[key] = value
	}
	return labels, nil
}
