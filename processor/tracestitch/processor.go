package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/consumer"
	"go.opentelemetry.io/collector/consumer/consumererror"
	"go.opentelemetry.io/collector/pdata/ptrace"
	"go.opentelemetry.io/collector/processor"
	"go.uber.org/zap"

	"github.com/tracestitch/tracestitch/processor/tracestitch/internal/metadata"
)

// tracestitchProcessor is the thin wiring around the buffer: it locks it,
// runs one ticker for all deadlines, and hands released units downstream.
// Like groupbytrace it implements processor.Traces itself, because
// processorhelper would forward synchronously.
type tracestitchProcessor struct {
	cfg     *Config
	logger  *zap.Logger
	next    consumer.Traces
	tel     *metadata.TelemetryBuilder
	now     func() time.Time
	tick    time.Duration
	blamed  map[string]bool
	blameMu sync.Mutex

	// buf's exclusive lock also orders releases; a release detaches its
	// units under it and stitches them in stage after letting it go.
	buf   *buffer
	stage *stitchStage

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
	return &tracestitchProcessor{
		cfg:    cfg,
		logger: set.Logger,
		next:   next,
		tel:    tel,
		now:    time.Now,
		tick:   tickInterval(cfg.WaitDuration),
		blamed: map[string]bool{},
		buf:    buf,
		stage:  newStitchStage(cfg, buf.names, buf.serving, buf.epoch),
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
	for o := range outcomeAttrs {
		p.tel.ProcessorTracestitchTraces.Add(context.Background(), 0, outcomeAttrs[o])
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
	units := p.release((*buffer).releaseAll)
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
	st, eviction := p.ingest(sp)
	var evicted []*unit
	if eviction != nil {
		evicted = p.stitch(eviction)
	}
	if sp.reset() {
		splitPool.Put(sp)
	}

	p.tel.ProcessorTracestitchSpansReceived.Add(ctx, int64(st.spans))
	p.tel.ProcessorTracestitchSpansBuffered.Add(ctx, int64(st.spans))
	if st.invalidRequest > 0 {
		p.tel.ProcessorTracestitchRequestIDInvalid.Add(ctx, int64(st.invalidRequest))
	}
	if len(evicted) > 0 {
		p.tel.ProcessorTracestitchTracesEvicted.Add(ctx, int64(len(evicted)))
		// Evicted traces are other clients' spans: they leave with a
		// context of their own, as the ticker's releases do, not with this
		// caller's metadata or its cancellation.
		p.emit(context.Background(), evicted)
	}
	return nil
}

// ingest adds a split batch to the buffer. Batches are added concurrently,
// under the buffer's lock held shared; only a batch that would take the
// buffer past max_buffered_spans takes it exclusively. Over capacity, the oldest units are
// detached before the lock is let go: the buffer never holds more, and the
// caller carries them downstream.
func (p *tracestitchProcessor) ingest(sp *batchSplit) (addStats, *release) {
	b := p.buf
	now := p.now()
	b.world.RLock()
	added := b.reserve(sp.st.spans)
	var st addStats
	if added {
		st = b.add(sp, now)
	}
	b.world.RUnlock()
	if added {
		return st, nil
	}
	b.lockExclusive()
	defer b.world.Unlock()
	b.spans.Add(int64(sp.st.spans))
	st = b.add(sp, now)
	if b.spans.Load() <= int64(b.maxSpans) {
		return st, nil
	}
	eviction := p.stage.begin(now)
	b.evictOverCapacity(eviction)
	return st, eviction
}

// releaseDue hands every unit whose wait is over downstream.
func (p *tracestitchProcessor) releaseDue(ctx context.Context) {
	p.emit(ctx, p.release((*buffer).releaseDue))
}

// release detaches units from the buffer with detach and stitches them.
func (p *tracestitchProcessor) release(detach func(*buffer, *release)) []*unit {
	p.buf.lockExclusive()
	rel := p.stage.begin(p.now())
	detach(p.buf, rel)
	p.buf.world.Unlock()
	return p.stitch(rel)
}

// stitch stitches a detached release and gives its records back to the
// buffer.
func (p *tracestitchProcessor) stitch(rel *release) []*unit {
	units := p.stage.run(rel)
	p.buf.retire(units)
	return units
}

func (p *tracestitchProcessor) emit(ctx context.Context, units []*unit) {
	if len(units) == 0 {
		return
	}
	// Telemetry is recorded with a context of its own: a cancelled caller
	// must not lose the counts.
	tctx := context.WithoutCancel(ctx)
	var tally releaseTally
	left := 0
	for _, u := range units {
		left += u.spans
	}
	p.tel.ProcessorTracestitchSpansBuffered.Add(tctx, -int64(left))
	b := newReleaseBatch()
	for _, u := range units {
		tally.add(&u.result)
		if ctx.Err() != nil {
			p.drop(tctx, u.spans, reasonShutdown, ctx.Err())
			continue
		}
		if b.spans > 0 && b.spans+u.spans > p.cfg.ReleaseBatchMaxSpans {
			p.send(ctx, tctx, b, &tally)
		}
		b.add(u, p.cfg.OriginalTraceIDAttribute)
	}
	p.send(ctx, tctx, b, &tally)
	p.record(tctx, &tally)
}

// send hands the batch to the next consumer and starts a new one; tctx
// records telemetry (see emit).
func (p *tracestitchProcessor) send(ctx, tctx context.Context, b *releaseBatch, tally *releaseTally) {
	if b.spans == 0 {
		return
	}
	if err := ctx.Err(); err != nil {
		p.drop(tctx, b.spans, reasonShutdown, err)
	} else if err := p.next.ConsumeTraces(ctx, b.td); err != nil {
		reason := reasonDownstreamError
		if consumererror.IsPermanent(err) {
			reason = reasonDownstreamPermanent
		}
		p.drop(tctx, b.spans, reason, err)
	} else {
		tally.released += int64(b.spans)
	}
	b.reset()
}
