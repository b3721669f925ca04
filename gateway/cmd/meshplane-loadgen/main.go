// Command meshplane-loadgen is the client load of `meshplane bench --load-client go`: SubmitTask or
// BatchSubmitTasks calls from concurrent callers over several connections, made with the generated Go
// stubs. It prints one JSON object when done: submitted, seconds, cpu_seconds and, for single submits,
// each call's latency in milliseconds.
//
//	meshplane-loadgen --target HOST:PORT --mode single|batch --total N [--batch B] [--callers C]
//	    [--connections K] [--capability CAP]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	meshplanev1 "github.com/meshplane/meshplane/generated/go/meshplane/v1"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "meshplane-loadgen:", err)
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		os.Exit(2)
	}
}

type options struct {
	target      string
	mode        string
	total       int
	batch       int
	callers     int
	connections int
	capability  string
}

type result struct {
	Submitted   int       `json:"submitted"`
	Seconds     float64   `json:"seconds"`
	CPUSeconds  float64   `json:"cpu_seconds"`
	LatenciesMs []float64 `json:"latencies_ms"`
}

func parse(args []string) (*options, error) {
	o := &options{}
	flags := flag.NewFlagSet("meshplane-loadgen", flag.ContinueOnError)
	flags.StringVar(&o.target, "target", "", "the control plane's (or the gateway's gRPC) address")
	flags.StringVar(&o.mode, "mode", "single", "single (SubmitTask) or batch (BatchSubmitTasks)")
	flags.IntVar(&o.total, "total", 1000, "tasks to submit")
	flags.IntVar(&o.batch, "batch", 100, "tasks per BatchSubmitTasks call")
	flags.IntVar(&o.callers, "callers", 1, "concurrent callers")
	flags.IntVar(&o.connections, "connections", 1, "client connections the callers take in turn")
	flags.StringVar(&o.capability, "capability", "bench.noop", "the tasks' capability")
	if err := flags.Parse(args); err != nil {
		return nil, err
	}
	switch {
	case o.target == "":
		return nil, errors.New("--target is required")
	case o.mode != "single" && o.mode != "batch":
		return nil, fmt.Errorf("--mode must be single or batch, got %q", o.mode)
	case o.total < 1 || o.batch < 1 || o.callers < 1 || o.connections < 1:
		return nil, errors.New("--total, --batch, --callers and --connections must be positive")
	}
	return o, nil
}

func run(args []string, stdout io.Writer) error {
	o, err := parse(args)
	if err != nil {
		return err
	}
	clients := make([]meshplanev1.TaskServiceClient, o.connections)
	for i := range clients {
		conn, err := grpc.NewClient(o.target, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		clients[i] = meshplanev1.NewTaskServiceClient(conn)
	}
	var remaining atomic.Int64
	remaining.Store(int64(o.total))
	latencies := make([][]float64, o.callers)
	errs := make(chan error, o.callers)
	cpuBefore := cpuSeconds()
	started := time.Now()
	var wg sync.WaitGroup
	for number := range o.callers {
		client := clients[number%len(clients)]
		wg.Go(func() {
			var err error
			if o.mode == "batch" {
				err = submitBatches(client, o, &remaining)
			} else {
				latencies[number], err = submitSingles(client, o, number, &remaining)
			}
			if err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	out := result{Submitted: o.total, Seconds: time.Since(started).Seconds(), CPUSeconds: cpuSeconds() - cpuBefore}
	out.LatenciesMs = []float64{}
	for _, own := range latencies {
		out.LatenciesMs = append(out.LatenciesMs, own...)
	}
	return json.NewEncoder(stdout).Encode(out)
}

func request(capability string, n int) *meshplanev1.SubmitTaskRequest {
	return &meshplanev1.SubmitTaskRequest{
		Target: &meshplanev1.TaskTarget{Capability: capability},
		Input:  &meshplanev1.Payload{Kind: &meshplanev1.Payload_Data{Data: fmt.Appendf(nil, `{"n":%d}`, n)}, ContentType: "application/json"},
	}
}

// submitBatches sends BatchSubmitTasks calls until the tasks left are taken (the last call may overshoot, as
// the Python load does: the total is a multiple of the batch in practice).
func submitBatches(client meshplanev1.TaskServiceClient, o *options, remaining *atomic.Int64) error {
	many := &meshplanev1.BatchSubmitTasksRequest{}
	for i := range o.batch {
		many.Requests = append(many.Requests, request(o.capability, i))
	}
	for remaining.Add(-int64(o.batch)) > -int64(o.batch) {
		if _, err := client.BatchSubmitTasks(context.Background(), many); err != nil {
			return err
		}
	}
	return nil
}

func submitSingles(client meshplanev1.TaskServiceClient, o *options, number int, remaining *atomic.Int64) ([]float64, error) {
	one := request(o.capability, number)
	var latencies []float64
	for remaining.Add(-1) >= 0 {
		began := time.Now()
		if _, err := client.SubmitTask(context.Background(), one); err != nil {
			return latencies, err
		}
		latencies = append(latencies, float64(time.Since(began).Microseconds())/1000)
	}
	return latencies, nil
}

// cpuSeconds is this process's CPU time so far, user and system.
func cpuSeconds() float64 {
	var usage syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &usage)
	return time.Duration(usage.Utime.Nano() + usage.Stime.Nano()).Seconds()
}
