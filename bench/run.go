package bench

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/open-telemetry/opentelemetry-collector-contrib/processor/groupbytraceprocessor"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/component/componenttest"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/collector/processor/processortest"

	"github.com/tracestitch/tracestitch/processor/tracestitch"
)

// Subject is one of the measured processors.
type Subject string

const (
	Tracestitch  Subject = "tracestitch"
	Groupbytrace Subject = "groupbytrace"
	Floor        Subject = "floor"
	// RewriteFloor is the floor that also stitches, with the decisions
	// given: the cheapest pass whose output is stitched (see floor.go).
	RewriteFloor Subject = "rewrite floor"
	// IndexFloor is the rewrite floor plus the least span-ID bookkeeping
	// any stitcher needs: a lower bound (see floor.go).
	IndexFloor Subject = "index floor"
)

// Subjects in table order.
var Subjects = []Subject{Tracestitch, Groupbytrace, Floor, RewriteFloor, IndexFloor}

// warmSpace is the ID space of the warm-up copy (the timed copy's is 0).
const warmSpace = 1

// TimedPass, when set, is called with true right before each timed pass of
// a round and with false right after it: benchtable -cpuprofile starts and
// stops a CPU profile with it, so that the profile holds what the table
// measures and not the copying of the input or the warm-up.
var TimedPass func(start bool)

// Wait is the wait_duration of the timed subjects.
const Wait = 100 * time.Millisecond

type countSink struct{ n atomic.Int64 }

func (c *countSink) Capabilities() consumer.Capabilities { return consumer.Capabilities{} }
func (c *countSink) ConsumeTraces(_ context.Context, td ptrace.Traces) error {
	c.n.Add(int64(td.SpanCount()))
	return nil
}

// create builds a subject through its factory for the input in. wait is
// its release wait; capacity is large enough that nothing is evicted.
func create(s Subject, in Input, wait time.Duration, capacity int, next consumer.Traces) (processor.Traces, *componenttest.Telemetry, error) {
	tel := componenttest.NewTelemetry()
	var f processor.Factory
	var cfg component.Config
	switch s {
	case Tracestitch:
		f = tracestitch.NewFactory()
		c := f.CreateDefaultConfig().(*tracestitch.Config)
		c.WaitDuration, c.MaxWait = wait, 10*wait
		c.MaxBufferedSpans = capacity
		cfg = c
	case Groupbytrace:
		f = groupbytraceprocessor.NewFactory()
		c := f.CreateDefaultConfig().(*groupbytraceprocessor.Config)
		c.WaitDuration = wait // everything else: its defaults
		cfg = c
	case Floor:
		f = newFloorFactory()
		cfg = f.CreateDefaultConfig()
	case RewriteFloor, IndexFloor:
		f = newFloorFactory()
		c := f.CreateDefaultConfig().(*floorConfig)
		c.moves = in.decisions(0, warmSpace) // the timed pass and the warm-up
		c.index = s == IndexFloor
		cfg = c
	default:
		return nil, nil, fmt.Errorf("unknown subject %q", s)
	}
	set := processortest.NewNopSettings(f.Type())
	set.TelemetrySettings = tel.NewTelemetrySettings()
	p, err := f.CreateTraces(context.Background(), set, cfg, next)
	if err != nil {
		return nil, nil, err
	}
	return p, tel, p.Start(context.Background(), componenttest.NewNopHost())
}

// Round feeds the input through a fresh subject until every span came out.
// Release timing is the same for all: tracestitch and groupbytrace release
// on their own clocks (wait 100ms; idle waiting costs no CPU), the floor
// flushes on Shutdown.
type Round struct {
	Spans int
	Wall  time.Duration
	// Ingest is the wall time until every ConsumeTraces call returned.
	Ingest time.Duration
	// LockWait is the time goroutines spent blocked on locks (the
	// runtime's /sync/mutex/wait/total, which counts its internal locks
	// too).
	LockWait time.Duration
	CPU      time.Duration
	Allocs   uint64
	// Lost spans never came out (the round ends when output stalls for 3s).
	Lost int64
}

// RunRound is one steady-state round: the subject first processes a copy
// of in untimed (its maps and buffers reach their working size, as in a
// running collector), then a second copy is timed. Copies are made before
// timing.
func RunRound(s Subject, in Input) (Round, error) { return runRound(s, in, Wait, false, 1) }

// ParallelRound is RunRound with the timed batches fed by several
// goroutines at once (batch i by producer i mod producers), as a
// collector's receivers do: it shows how much of the ingest path runs in
// parallel.
func ParallelRound(s Subject, in Input, producers int) (Round, error) {
	return runRound(s, in, Wait, false, producers)
}

// FlushRound buffers everything (long wait) and releases it all with
// Shutdown: the cost per span at a given buffered volume. Not for
// groupbytrace, which does not flush on Shutdown.
func FlushRound(s Subject, in Input) (Round, error) { return runRound(s, in, time.Hour, true, 1) }

func runRound(s Subject, in Input, wait time.Duration, flush bool, producers int) (Round, error) {
	sink := &countSink{}
	p, tel, err := create(s, in, wait, 4*in.Spans, sink)
	if err != nil {
		return Round{}, err
	}
	defer tel.Shutdown(context.Background()) //nolint:errcheck
	ctx := context.Background()
	// the floors have no clock: they release on Shutdown (or flush)
	fl, isFloor := p.(*floor)
	if !flush {
		warm := in.CloneAs(warmSpace)
		for _, td := range warm {
			if err := p.ConsumeTraces(ctx, td); err != nil {
				return Round{}, err
			}
		}
		if isFloor {
			if err := fl.flush(ctx); err != nil {
				return Round{}, err
			}
		}
		waitFor(sink, int64(in.Spans))
	}
	want := sink.n.Load() + int64(in.Spans)
	batches := in.Clone()
	// Every subject starts its timed pass without garbage collection debt
	// left by the warm-up and the copying of the input.
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	wait0 := lockWait()
	if TimedPass != nil {
		TimedPass(true)
	}
	cpu0, wall0 := cpuTime(), time.Now()
	if err := feed(ctx, p, batches, producers); err != nil {
		return Round{}, err
	}
	ingest := time.Since(wall0)
	if flush || isFloor {
		if err := p.Shutdown(ctx); err != nil {
			return Round{}, err
		}
	}
	lost := waitFor(sink, want)
	if TimedPass != nil {
		TimedPass(false)
	}
	r := Round{Spans: in.Spans, Wall: time.Since(wall0), Ingest: ingest, CPU: cpuTime() - cpu0, Lost: lost}
	r.LockWait = lockWait() - wait0
	runtime.ReadMemStats(&m1)
	r.Allocs = m1.Mallocs - m0.Mallocs
	if !flush && !isFloor {
		if err := p.Shutdown(ctx); err != nil {
			return r, err
		}
	}
	return r, nil
}

// feed hands the batches to p from the given number of goroutines.
func feed(ctx context.Context, p processor.Traces, batches []ptrace.Traces, producers int) error {
	var wg sync.WaitGroup
	errs := make([]error, producers)
	for w := range producers {
		wg.Go(func() {
			for i := w; i < len(batches); i += producers {
				if err := p.ConsumeTraces(ctx, batches[i]); err != nil {
					errs[w] = err
					return
				}
				batches[i] = ptrace.Traces{}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitFor waits until the sink has n spans, or its count stalls for 3s;
// it returns how many are missing.
func waitFor(sink *countSink, n int64) int64 {
	last, since := sink.n.Load(), time.Now()
	for {
		got := sink.n.Load()
		if got >= n {
			return 0
		}
		if got != last {
			last, since = got, time.Now()
		} else if time.Since(since) > 3*time.Second {
			return n - got
		}
		time.Sleep(time.Millisecond)
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// HeldPerSpan buffers the input with a long wait and returns the live heap
// the subject holds per buffered span: the spans with their resources and
// scopes, as it keeps them, and its own structures (the live heap before the
// input was copied is the baseline).
func HeldPerSpan(s Subject, in Input) (float64, error) {
	// Exact attribute arrays: groupbytrace keeps copies of the spans (exact)
	// where the others keep the spans themselves, so room left by a receiver
	// would count against some subjects and for others.
	base := liveHeap()
	batches := in.copies(0, false)
	sink := &countSink{}
	p, tel, err := create(s, in, time.Hour, 4*in.Spans, sink)
	if err != nil {
		return 0, err
	}
	defer tel.Shutdown(context.Background()) //nolint:errcheck
	for i, td := range batches {
		if err := p.ConsumeTraces(context.Background(), td); err != nil {
			return 0, err
		}
		batches[i] = ptrace.Traces{}
	}
	batches = nil
	if s == Groupbytrace {
		// its events are processed on a worker: wait until the queue is empty
		if err := waitGauge(tel, "otelcol_processor_groupbytrace_num_events_in_queue", 0); err != nil {
			return 0, err
		}
	}
	held := float64(liveHeap()) - float64(base)
	runtime.KeepAlive(p)
	if sink.n.Load() != 0 {
		return 0, fmt.Errorf("%s released spans early", s)
	}
	_ = p.Shutdown(context.Background())
	return held / float64(in.Spans), nil
}

func waitGauge(tel *componenttest.Telemetry, name string, want int64) error {
	deadline := time.Now().Add(5 * time.Minute)
	for time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
		if v, ok := gauge(tel, name); ok && v == want {
			return nil
		}
	}
	return fmt.Errorf("%s never reached %d", name, want)
}

func lockWait() time.Duration {
	s := []metrics.Sample{{Name: "/sync/mutex/wait/total:seconds"}}
	metrics.Read(s)
	return time.Duration(s[0].Value.Float64() * 1e9)
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}
