package tracestitch

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestIDTableMatchesMap runs random adds, swaps, lookups, deletes and a
// reset against a Go map, through growth and draining, with keys from a
// small pool (repeats) and a tiny table (long probe runs that wrap around
// the end).
func TestIDTableMatchesMap(t *testing.T) {
	for _, pool := range []int{40, 3000} {
		rng := rand.New(rand.NewPCG(uint64(pool), 7))
		tab := newIDTable()
		ref := map[uint64]uint32{}
		keys := make([]uint64, pool)
		for i := range keys {
			keys[i] = rng.Uint64() | 1
		}
		keys[0] = 1 << 32 // halves of the key differ
		for step := range 200_000 {
			k := keys[rng.IntN(pool)]
			switch op := rng.IntN(10); {
			case step == 60_000: // a reset empties the table
				tab.reset(len(ref))
				clear(ref)
			case op < 5 && step < 120_000: // grow first, then drain (shrink)
				old, had := tab.add(k, uint32(step))
				want, wantHad := ref[k]
				require.Equal(t, wantHad, had)
				require.Equal(t, want, old)
				if !had {
					ref[k] = uint32(step)
				}
			case op < 6:
				old, had := tab.swap(k, uint32(step))
				want, wantHad := ref[k]
				require.Equal(t, wantHad, had)
				require.Equal(t, want, old)
				ref[k] = uint32(step)
			case op < 8:
				tab.del(k)
				delete(ref, k)
			default:
				v, ok := tab.get(k)
				want, wantOK := ref[k]
				require.Equal(t, wantOK, ok)
				require.Equal(t, want, v)
			}
			require.Equal(t, len(ref), tab.len())
		}
		for k, v := range ref {
			got, ok := tab.get(k)
			require.True(t, ok)
			require.Equal(t, v, got)
		}
		_, added := tab.add(0, 1)
		require.False(t, added)
		_, ok := tab.get(0)
		require.False(t, ok, "the empty key is never stored")
	}
}

// BenchmarkIDTable inserts and deletes random span IDs, as the buffer does
// on arrival and release, in the idTable and in a Go map (the anchor):
// go test -run '^$' -bench IDTable ./processor/tracestitch/
func BenchmarkIDTable(b *testing.B) {
	for _, n := range []int{100_000, 1_000_000} {
		rng := rand.New(rand.NewPCG(uint64(n), 1))
		keys := make([]uint64, n)
		for i := range keys {
			keys[i] = rng.Uint64() | 1
		}
		b.Run(fmt.Sprintf("idTable/%d", n), func(b *testing.B) {
			tab := newIDTable()
			for b.Loop() {
				for i, k := range keys {
					tab.add(k, uint32(i))
				}
				for _, k := range keys {
					tab.del(k)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/key")
		})
		b.Run(fmt.Sprintf("map/%d", n), func(b *testing.B) {
			m := map[uint64]uint32{}
			for b.Loop() {
				for i, k := range keys {
					if _, ok := m[k]; !ok {
						m[k] = uint32(i)
					}
				}
				for _, k := range keys {
					delete(m, k)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/key")
		})
	}
}
