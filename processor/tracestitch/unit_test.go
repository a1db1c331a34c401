package tracestitch

import (
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// TestHeldSizes keeps the per-span and per-trace memory the README states.
func TestHeldSizes(t *testing.T) {
	require.Equal(t, uintptr(24), unsafe.Sizeof(heldRec{}), "record per buffered span")
	require.Equal(t, uintptr(48), unsafe.Sizeof(heldExt{}), "extra per span with a request ID")
	require.LessOrEqual(t, unsafe.Sizeof(group{}), uintptr(144), "per buffered trace ID")
}
