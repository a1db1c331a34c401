package tracestitch

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"go.opentelemetry.io/collector/pdata/pcommon"
)

// TestServingIndex: containment within one range, across buckets, by
// instance, with tolerance, and expiry.
func TestServingIndex(t *testing.T) {
	const inst = uint64(7)
	ms := func(n int64) pcommon.Timestamp { return pcommon.Timestamp(base + n*1e6) }
	x := newServingIndex(int64(10*time.Second), 3)
	x.add([]spanRec{
		{kind: S, instance: inst, start: ms(0), end: ms(1000)},    // long: many buckets
		{kind: S, instance: inst, start: ms(2000), end: ms(2050)}, // short
		{kind: C, instance: inst, start: ms(3000), end: ms(4000)}, // not a SERVER span
	}, 0)
	assert.True(t, x.serving(inst, ms(900), ms(950), 0), "inside the long range, eight buckets later")
	assert.False(t, x.serving(inst, ms(900), ms(1001), 0), "ends after it")
	assert.True(t, x.serving(inst, ms(900), ms(1001), uint64(time.Millisecond)), "within tolerance")
	assert.True(t, x.serving(inst, ms(2010), ms(2040), 0))
	assert.False(t, x.serving(inst, ms(1990), ms(2040), 0), "starts before it")
	assert.False(t, x.serving(inst, ms(3100), ms(3200), 0), "CLIENT spans are not serving")
	assert.False(t, x.serving(inst+1, ms(10), ms(20), 0), "another instance")
	assert.False(t, x.serving(0, ms(10), ms(20), 0), "no instance")

	x.add([]spanRec{{kind: S, instance: inst, start: ms(5000), end: ms(5100)}}, int64(5*time.Second))
	assert.True(t, x.serving(inst, ms(10), ms(20), 0), "within the bound of 3 ranges and the retention")
	x.add([]spanRec{{kind: S, instance: inst, start: ms(6000), end: ms(6100)}}, int64(6*time.Second))
	assert.False(t, x.serving(inst, ms(10), ms(20), 0), "the oldest bucket left for the bound")
	x.expire(int64(16 * time.Second))
	assert.False(t, x.serving(inst, ms(2010), ms(2040), 0), "expired")
	assert.True(t, x.serving(inst, ms(6010), ms(6020), 0), "made 10s before: kept")
	x.expire(int64(17 * time.Second))
	assert.Zero(t, x.entries)
	assert.Empty(t, x.instances)
}
