package tracestitch

import (
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/collector/pdata/pcommon"
	"go.opentelemetry.io/collector/pdata/ptrace"
)

func TestRequestIDKey(t *testing.T) {
	base := requestIDKey(rid)
	assert.Equal(t, base, requestIDKey(rid14), "character 14 is masked")
	assert.Equal(t, base, requestIDKey("6F1C3B5E-2D7A-9C4E-8B1A-0C3D5E7F9A2B"), "hex case does not matter")
	assert.NotEqual(t, base, requestIDKey(ridOther), "any other character counts")
	assert.NotEqual(t, base, requestIDKey("6f1c3b5e-2d7a-9c4e-8b1a-0c3d5e7f9a2"), "not a UUID: exact")
	assert.Equal(t, requestIDKey("req-42"), requestIDKey("req-42"))
	assert.NotEqual(t, requestIDKey("req-42"), requestIDKey("REQ-42"), "non-UUIDs compare exactly")
	assert.NotEqual(t, requestIDKey("6f1c3b5e-2d7a-9c4e-8b1a-0c3d5e7f9a2g"), base, "a non-hex character makes it a plain string")
	assert.True(t, reqKey{}.empty())
	assert.False(t, requestIDKey("x").empty())
}

// TestRecReaderKeyOrder checks the documented precedence (the resource's
// identity is read once per resource): request-ID keys in order (unusable
// values counted and skipped), identity keys in order with the span's value
// before the resource's for each key.
func TestRecReaderKeyOrder(t *testing.T) {
	long := strings.Repeat("k", 300)
	many := make([]string, 20)
	for i := range many {
		many[i] = fmt.Sprintf("id.%02d", i)
	}
	for _, tc := range []struct {
		name         string
		identityKeys []string
		span, res    map[string]any
		wantInstance string
		wantInvalid  bool
	}{
		{
			name:         "span value of an earlier key wins over resource value",
			identityKeys: []string{"node_id", "k8s.pod.name"},
			span:         map[string]any{"k8s.pod.name": "pod-span"},
			res:          map[string]any{"node_id": "node-res", "k8s.pod.name": "pod-res"},
			wantInstance: "node-res",
		},
		{
			name:         "span before resource for the same key",
			identityKeys: []string{"node_id"},
			span:         map[string]any{"node_id": "node-span"},
			res:          map[string]any{"node_id": "node-res"},
			wantInstance: "node-span",
		},
		{
			name:         "empty and non-string values are passed over",
			identityKeys: []string{"node_id", "host.name"},
			span:         map[string]any{"node_id": "", "host.name": 7},
			res:          map[string]any{"host.name": "host-res"},
			wantInstance: "host-res",
		},
		{
			name:         "many keys, the last one on the span",
			identityKeys: append(append([]string(nil), many...), long),
			span:         map[string]any{long: "long-span", many[len(many)-1]: "last-span"},
			wantInstance: "last-span",
		},
		{
			name:         "a key longer than 255 bytes",
			identityKeys: []string{long},
			span:         map[string]any{strings.Repeat("k", 299): "near-miss"},
			res:          map[string]any{long: "long-res"},
			wantInstance: "long-res",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := createDefaultConfig().(*Config)
			cfg.InstanceIdentity = tc.identityKeys
			r := newRecReader(cfg)
			td := ptrace.NewTraces()
			rs := td.ResourceSpans().AppendEmpty()
			require.NoError(t, rs.Resource().Attributes().FromRaw(tc.res))
			sp := rs.ScopeSpans().AppendEmpty().Spans().AppendEmpty()
			sp.SetKind(ptrace.SpanKindServer)
			require.NoError(t, sp.Attributes().FromRaw(tc.span))
			sp.Attributes().PutInt("guid:x-request-id", 1) // unusable: counted
			sp.Attributes().PutStr("x-request-id", rid)
			rec, invalid := r.read(sp, r.identityOf(rs.Resource().Attributes()), 0)
			assert.True(t, invalid)
			assert.Equal(t, requestIDKey(rid), rec.reqKey)
			assert.Equal(t, instanceKey(tc.wantInstance), rec.instance)

			// a CLIENT span with a parent is neither a request-ID candidate
			// nor a root: its attributes are left unread
			sp.SetKind(ptrace.SpanKindClient)
			sp.SetParentSpanID(pcommon.SpanID{1})
			rec, invalid = r.read(sp, r.identityOf(rs.Resource().Attributes()), 0)
			assert.False(t, invalid)
			assert.True(t, rec.reqKey.empty())
			assert.Zero(t, rec.instance)
		})
	}
}
