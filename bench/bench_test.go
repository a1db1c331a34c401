package bench

import (
	"fmt"
	"testing"
)

// BenchmarkRound runs the same rounds as `make bench` as Go benchmarks:
// go test -run '^$' -bench . ./bench
func BenchmarkRound(b *testing.B) {
	for _, shape := range []Shape{Spans10, Spans100} {
		in := Generate(shape, 20_000)
		for _, s := range Subjects {
			b.Run(fmt.Sprintf("%s/%d-span", s, shape), func(b *testing.B) {
				var spans, cpu int64
				for i := 0; i < b.N; i++ {
					r, err := RunRound(s, in)
					if err != nil {
						b.Fatal(err)
					}
					spans += int64(r.Spans)
					cpu += r.CPU.Nanoseconds()
				}
				b.ReportMetric(float64(cpu)/float64(spans), "cpu-ns/span")
			})
		}
	}
}

// TestRoundsDeliverEverything keeps the harness honest: every subject
// releases every span it was given.
func TestRoundsDeliverEverything(t *testing.T) {
	in := Generate(Spans10, 2_000)
	for _, s := range Subjects {
		r, err := RunRound(s, in)
		if err != nil {
			t.Fatal(err)
		}
		if r.Lost != 0 && s != Groupbytrace {
			t.Fatalf("%s lost %d of %d spans", s, r.Lost, in.Spans)
		}
	}
	if r, err := FlushRound(Tracestitch, in); err != nil || r.Lost != 0 {
		t.Fatal(err, r.Lost)
	}
	if r, err := ParallelRound(Tracestitch, in, 2); err != nil || r.Lost != 0 {
		t.Fatal(err, r.Lost)
	}
}
