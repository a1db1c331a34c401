// Lifecycle and ConsumeTraces: the wiring of the stages a span goes through.

package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/processor"
	"go.uber.org/zap"

	"github.com/tracestitch/tracestitch/processor/tracestitch/internal/metadata"
)

// tracestitchProcessor wires the stages a span goes through. Like
// groupbytrace it implements processor.Traces itself, because
// processorhelper would forward synchronously.
//
//	ConsumeTraces
//	  └─ batchSplit.split            split.go: regroup by trace ID, read records (spanrec.go), no lock
//	  └─ buffer.ingest               buffer.go: groups (unit.go) in trace shards, keys in key
//	                                  shards (shards.go, indexes.go), SERVER ranges (serving.go);
//	                                  over max_buffered_spans the oldest units are evicted
//	ticker (run) ─ releaseDue
//	  └─ buffer.takeDue              buffer.go: due groups (deadlines.go) gathered into units
//	  └─ stitchStage.run             stage.go: stitcher (pure, stitcher.go) per unit, in turn;
//	                                  released spans logged for late ones (released_index.go)
//	  └─ emit                        emit.go: rewrite moved spans, calls downstream of up to
//	                                  release_batch_max_spans; telemetry.go counts it all
//	  └─ buffer.retire               records back to their pools (pool.go)
type tracestitchProcessor struct {
	cfg     *Config
	logger  *zap.Logger
	next    consumer.Traces
	tel     *metadata.TelemetryBuilder
	attrs   *metricAttrs
	now     func() time.Time
	tick    time.Duration
	blamed  map[string]bool
	blameMu sync.Mutex

	// buf numbers its releases; stage stitches them in that order.
	buf   *buffer
	stage *stitchStage
	// keys labels released traces in key mode (nil in stitch mode).
	keys *keyLabeler

	lifecycle sync.Mutex
	started   bool
	stopped   bool
	stop      chan struct{}
	done      chan struct{}
}

var _ processor.Traces = (*tracestitchProcessor)(nil)

func newProcessor(set processor.Settings, cfg *Config, next consumer.Traces) (*tracestitchProcessor, error) {
	tel, err := metadata.NewTelemetryBuilder(set.TelemetrySettings)
	if err != nil {
		return nil, err
	}
	buf := newBuffer(cfg)
	var keys *keyLabeler
	if cfg.Mode == ModeKey {
		keys = newKeyLabeler(cfg)
	}
	return &tracestitchProcessor{
		keys:   keys,
		cfg:    cfg,
		logger: set.Logger,
		next:   next,
		tel:    tel,
		attrs:  newMetricAttrs(set.ID),
		now:    time.Now,
		tick:   tickInterval(cfg.WaitDuration),
		blamed: map[string]bool{},
		buf:    buf,
		stage:  newStitchStage(cfg, buf.names, buf.serving),
	}, nil
}

// tickInterval keeps release within a fraction of wait_duration without
// waking up needlessly often.
func tickInterval(wait time.Duration) time.Duration {
	return min(max(wait/10, 5*time.Millisecond), time.Second)
}

func (p *tracestitchProcessor) Capabilities() consumer.Capabilities {
	return consumer.Capabilities{MutatesData: true}
}

func (p *tracestitchProcessor) Start(context.Context, component.Host) error {
	p.lifecycle.Lock()
	defer p.lifecycle.Unlock()
	if p.started || p.stopped {
		return nil
	}
	p.started = true
	// Every outcome exists from the start, so that a share computed from
	// them has data before the first trace of each kind is released.
	if p.keys != nil {
		for _, src := range p.attrs.keySources {
			p.tel.ProcessorTracestitchKeys.Add(context.Background(), 0, src)
		}
	} else {
		for _, o := range p.attrs.outcomes {
			p.tel.ProcessorTracestitchTraces.Add(context.Background(), 0, o)
		}
	}
	p.stop = make(chan struct{})
	p.done = make(chan struct{})
	go p.run()
	return nil
}

func (p *tracestitchProcessor) run() {
	defer close(p.done)
	t := time.NewTicker(p.tick)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.releaseDue(context.Background())
		}
	}
}

// Shutdown stops the ticker and flushes every buffered span downstream.
func (p *tracestitchProcessor) Shutdown(ctx context.Context) error {
	p.lifecycle.Lock()
	defer p.lifecycle.Unlock()
	if p.stopped {
		return nil
	}
	p.stopped = true
	var err error
	if p.started {
		close(p.stop)
		select {
		case <-p.done:
		case <-ctx.Done():
			// The ticker is stuck downstream; flush what is buffered anyway.
			err = ctx.Err()
		}
	}
	units := p.stitch(p.buf.takeAll(p.now()))
	// Flush in the background so that a consumer that blocks cannot hold
	// Shutdown past its context; what is not handed on by then is counted.
	flushed := make(chan struct{})
	go func() {
		defer close(flushed)
		p.emit(ctx, units)
	}()
	select {
	case <-flushed:
	case <-ctx.Done():
		err = ctx.Err()
	}
	p.tel.Shutdown()
	return err
}

// ConsumeTraces buffers the spans; it never waits for a trace to be due.
// Only when the buffer is over max_buffered_spans does the caller carry the
// oldest traces downstream itself (backpressure instead of loss), under a
// context detached from its own.
func (p *tracestitchProcessor) ConsumeTraces(ctx context.Context, td ptrace.Traces) error {
	if td.ResourceSpans().Len() == 0 {
		return nil
	}
	sp := splitPool.Get().(*batchSplit)
	sp.split(td, &p.buf.reader, p.buf.names)
	st, eviction := p.buf.ingest(sp, p.now())
	var evicted []*unit
	if eviction != nil {
		evicted = p.stitch(eviction)
	}
	if sp.reset() {
		splitPool.Put(sp)
	}

	p.tel.ProcessorTracestitchSpansReceived.Add(ctx, int64(st.spans), p.attrs.self)
	p.tel.ProcessorTracestitchSpansBuffered.Add(ctx, int64(st.spans), p.attrs.self)
	if st.invalidRequest > 0 {
		p.tel.ProcessorTracestitchRequestIDInvalid.Add(ctx, int64(st.invalidRequest), p.attrs.self)
	}
	if len(evicted) > 0 {
		p.tel.ProcessorTracestitchTracesEvicted.Add(ctx, int64(len(evicted)), p.attrs.self)
		// Evicted traces are other clients' spans: they leave with a
		// context of their own, as the ticker's releases do, not with this
		// caller's metadata or its cancellation.
		p.emit(context.Background(), evicted)
	}
	return nil
}

// releaseDue hands every unit whose wait is over downstream.
func (p *tracestitchProcessor) releaseDue(ctx context.Context) {
	p.emit(ctx, p.stitch(p.buf.takeDue(p.now())))
}

// stitch stitches a detached release and gives its records back to the
// buffer.
func (p *tracestitchProcessor) stitch(rel *release) []*unit {
	units := p.stage.run(rel)
	p.buf.retire(units)
	return units
}
