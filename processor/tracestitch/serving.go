// The serving index: when each instance was serving a request.

package tracestitch // import "github.com/tracestitch/tracestitch/processor/tracestitch"

import (
	"math"
	"sync"

	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

// servingBucketWidth is the span-time width of a servingIndex bucket: a
// query scans the ranges of one bucket and the maximum end of earlier ones.
const servingBucketWidth = int64(100e6) // 100ms in ns

// servingIndex remembers when each workload instance was serving requests:
// the time ranges of its SERVER spans, buffered or released alike. The
// outcome rule asks it whether a root that is not a SERVER span was made
// while its own instance was serving a request, which is the evidence that
// the app lost the trace context of that request.
//
// Entries are kept for retention after their bucket was made (on the
// buffer's clock), long enough for any fragment root of that time to be
// released, late spans included; max_index_entries bounds them, oldest
// bucket first. Ranges are kept in buckets by start time so that a query
// reads one bucket's ranges and the maximum end of the earlier ones.
type servingIndex struct {
	mu         sync.Mutex
	retention  int64
	maxEntries int
	instances  map[uint64]*instanceServing
	// order holds the buckets in creation order, for expiry and the bound.
	order   queue[servingBucketRef]
	entries int
}

type instanceServing struct {
	buckets map[int64]*servingBucket // by start / servingBucketWidth
	// longest is the longest range seen: no earlier bucket can contain a
	// query that starts more than longest after it.
	longest int64
}

type servingBucket struct {
	ranges []servingRange
	maxEnd int64
}

type servingRange struct{ start, end int64 }

type servingBucketRef struct {
	instance uint64
	bucket   int64
	created  int64
}

func newServingIndex(retention int64, maxEntries int) *servingIndex {
	return &servingIndex{retention: retention, maxEntries: maxEntries, instances: make(map[uint64]*instanceServing)}
}

// add records the SERVER spans of recs that name their instance; now is
// the buffer's clock. A nil index records nothing.
func (x *servingIndex) add(recs []spanRec, now int64) {
	if x == nil {
		return
	}
	var last servingBucketRef // a batch's spans mostly come by instance and time
	var in *instanceServing
	var b *servingBucket
	for i := range recs {
		r := &recs[i]
		if r.kind != ptrace.SpanKindServer || r.instance == 0 || r.end < r.start {
			continue
		}
		if b == nil {
			x.mu.Lock()
		}
		start, end := int64(r.start), int64(r.end)
		if k := start / servingBucketWidth; b == nil || r.instance != last.instance || k != last.bucket {
			last = servingBucketRef{instance: r.instance, bucket: k}
			in, b = x.bucket(r.instance, k, now)
		}
		b.ranges = append(b.ranges, servingRange{start: start, end: end})
		b.maxEnd = max(b.maxEnd, end)
		in.longest = max(in.longest, end-start)
		x.entries++
	}
	if b != nil {
		x.trim(now)
		x.mu.Unlock()
	}
}

// bucket returns instance's entry and its bucket k, making them.
func (x *servingIndex) bucket(instance uint64, k, now int64) (*instanceServing, *servingBucket) {
	in, ok := x.instances[instance]
	if !ok {
		in = &instanceServing{buckets: make(map[int64]*servingBucket)}
		x.instances[instance] = in
	}
	b, ok := in.buckets[k]
	if !ok {
		b = &servingBucket{maxEnd: math.MinInt64}
		in.buckets[k] = b
		x.order.push(servingBucketRef{instance: instance, bucket: k, created: now})
	}
	return in, b
}

// expire drops the buckets made more than the retention before now.
func (x *servingIndex) expire(now int64) {
	if x == nil {
		return
	}
	x.mu.Lock()
	x.trim(now)
	x.mu.Unlock()
}

func (x *servingIndex) trim(now int64) {
	for x.order.len() > 0 {
		ref := x.order.at(0)
		if now-ref.created <= x.retention && x.entries <= x.maxEntries {
			return
		}
		x.order.pop()
		in := x.instances[ref.instance]
		x.entries -= len(in.buckets[ref.bucket].ranges)
		delete(in.buckets, ref.bucket)
		if len(in.buckets) == 0 {
			delete(x.instances, ref.instance)
		}
	}
}

// serving reports whether one SERVER span of instance contains [start,
// end], with tol of slack on both ends.
func (x *servingIndex) serving(instance uint64, start, end pcommon.Timestamp, tol uint64) bool {
	if instance == 0 {
		return false
	}
	s, e, t := int64(start), int64(end), int64(tol)
	x.mu.Lock()
	defer x.mu.Unlock()
	in, ok := x.instances[instance]
	if !ok {
		return false
	}
	last := (s + t) / servingBucketWidth
	if b, ok := in.buckets[last]; ok && b.maxEnd+t >= e {
		for _, r := range b.ranges {
			if r.start <= s+t && r.end+t >= e {
				return true
			}
		}
	}
	// every range of an earlier bucket starts before s
	first := (s + t - in.longest) / servingBucketWidth
	if last-first > int64(len(in.buckets)) {
		for k, b := range in.buckets {
			if k < last && k >= first && b.maxEnd+t >= e {
				return true
			}
		}
		return false
	}
	for k := last - 1; k >= first; k-- {
		if b, ok := in.buckets[k]; ok && b.maxEnd+t >= e {
			return true
		}
	}
	return false
}
