package tracestitch

import (
	"testing"

	"github.com/stretchr/testify/assert"
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
