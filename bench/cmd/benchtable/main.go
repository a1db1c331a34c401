// Command benchtable runs tracestitch, contrib's groupbytraceprocessor and a
// regroup-only floor on the same simulator traffic in one process and prints
// the comparison table with ratios (make bench).
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"sort"

	"github.com/tracestitch/tracestitch/bench"
)

func main() {
	spans := flag.Int("spans", 100_000, "spans per throughput round")
	rounds := flag.Int("rounds", 3, "rounds per subject (median is reported)")
	maxHeld := flag.Int("max-held", 1_000_000, "largest buffered volume for the memory and flatness tables")
	flag.Parse()
	if err := run(*spans, *rounds, *maxHeld); err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
}

func median(rs []bench.Round, f func(bench.Round) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	sort.Float64s(v)
	return v[len(v)/2]
}

func run(spans, rounds, maxHeld int) error {
	fmt.Printf("machine: %s/%s, %d CPUs (GOMAXPROCS %d), %s\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	fmt.Printf("input: meshsim traffic, 30%% of requests broken (request ID only), %d spans per round, wait_duration %v, median of %d rounds\n\n", spans, bench.Wait, rounds)

	fmt.Println("| shape | subject | spans/s per core | CPU ns/span | wall ns/span | allocs/span | spans lost | CPU ratio vs groupbytrace | CPU ratio vs floor |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|")
	for _, shape := range []bench.Shape{bench.Spans10, bench.Spans100} {
		in := bench.Generate(shape, spans)
		cpu := map[bench.Subject]float64{}
		rows := map[bench.Subject][]bench.Round{}
		for _, s := range bench.Subjects {
			for i := 0; i < rounds; i++ {
				r, err := bench.RunRound(s, in)
				if err != nil {
					return err
				}
				rows[s] = append(rows[s], r)
			}
			cpu[s] = median(rows[s], func(r bench.Round) float64 { return float64(r.CPU.Nanoseconds()) / float64(r.Spans) })
		}
		for _, s := range bench.Subjects {
			rs := rows[s]
			wall := median(rs, func(r bench.Round) float64 { return float64(r.Wall.Nanoseconds()) / float64(r.Spans) })
			allocs := median(rs, func(r bench.Round) float64 { return float64(r.Allocs) / float64(r.Spans) })
			var lost int64
			for _, r := range rs {
				lost += r.Lost
			}
			fmt.Printf("| %d-span traces | %s | %.0f | %.0f | %.0f | %.1f | %d of %d | %.3f | %.2f |\n",
				shape, s, 1e9/cpu[s], cpu[s], wall, allocs, lost, len(rs)*in.Spans, cpu[s]/cpu[bench.Groupbytrace], cpu[s]/cpu[bench.Floor])
		}
	}

	// Flatness first: groupbytrace keeps a timer per trace for its whole
	// wait, so what it buffered stays live for an hour after Shutdown and
	// would inflate the GC cost of anything measured after it.
	volumes := []int{1_000, 100_000, 1_000_000}
	var inputs []bench.Input
	for _, n := range volumes {
		if n <= maxHeld {
			inputs = append(inputs, bench.Generate(bench.Spans10, n))
		}
	}
	fmt.Println("\ncost per span by buffered volume (10-span traces; everything buffered, then released by Shutdown):")
	fmt.Println("\n| buffered spans | tracestitch CPU ns/span | ratio vs smallest | floor CPU ns/span | tracestitch / floor |")
	fmt.Println("|---|---|---|---|---|")
	var first float64
	for i, in := range inputs {
		var ts, fl []bench.Round
		// small volumes are short rounds: more of them, so that fixed costs
		// and noise do not decide the median
		n := rounds
		if in.Spans < 100_000 {
			n = 5 * rounds
		}
		for r := 0; r < n; r++ {
			t, err := bench.FlushRound(bench.Tracestitch, in)
			if err != nil {
				return err
			}
			f, err := bench.FlushRound(bench.Floor, in)
			if err != nil {
				return err
			}
			ts, fl = append(ts, t), append(fl, f)
		}
		perSpan := func(r bench.Round) float64 { return float64(r.CPU.Nanoseconds()) / float64(r.Spans) }
		t, f := median(ts, perSpan), median(fl, perSpan)
		if i == 0 {
			first = t
		}
		fmt.Printf("| %d | %.0f | %.2f | %.0f | %.2f |\n", in.Spans, t, t/first, f, t/f)
	}

	fmt.Println("\nbytes held per buffered span (live heap / buffered spans, 10-span traces, nothing released):")
	fmt.Println("\n| buffered spans | tracestitch | groupbytrace | floor | tracestitch / groupbytrace |")
	fmt.Println("|---|---|---|---|---|")
	for _, in := range inputs {
		held := map[bench.Subject]float64{}
		for _, s := range []bench.Subject{bench.Tracestitch, bench.Floor, bench.Groupbytrace} {
			h, err := bench.HeldPerSpan(s, in)
			if err != nil {
				return err
			}
			held[s] = h
		}
		fmt.Printf("| %d | %.0f | %.0f | %.0f | %.2f |\n", in.Spans, held[bench.Tracestitch], held[bench.Groupbytrace], held[bench.Floor], held[bench.Tracestitch]/held[bench.Groupbytrace])
	}
	return nil
}
