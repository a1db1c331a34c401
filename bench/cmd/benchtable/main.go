// Command benchtable runs tracestitch, contrib's groupbytraceprocessor, a
// regroup-only floor, the rewrite floor (the floor plus the rewrite of
// stitched output, with the stitch decisions given) and the index floor
// (the rewrite floor plus the least span-ID bookkeeping) on the same
// simulator traffic in one process and prints the comparison table with
// ratios (make bench). With -compare it runs only the subjects named, for
// many rounds, to measure their ratios more closely (make floors).
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"

	"github.com/tracestitch/tracestitch/bench"
)

func main() {
	spans := flag.Int("spans", 100_000, "spans per throughput round")
	rounds := flag.Int("rounds", 5, "rounds per subject, taking turns (median is reported)")
	maxHeld := flag.Int("max-held", 1_000_000, "largest buffered volume for the memory and flatness tables")
	cpuprofile := flag.String("cpuprofile", "", "instead of the tables: profile the timed passes of -subject on -shape, one file per round (FILE.1, FILE.2, ...)")
	subject := flag.String("subject", string(bench.Tracestitch), "subject to profile")
	shape := flag.String("shape", "100", "trace shape to profile: 10, 100, 1000 or a shape's name")
	compare := flag.String("compare", "", "instead of the tables: these subjects (comma-separated), taking turns for -rounds rounds on every shape; prints each one's cost per round relative to the first")
	flag.Parse()
	var err error
	if *compare != "" {
		var subjects []bench.Subject
		for _, s := range strings.Split(*compare, ",") {
			subjects = append(subjects, bench.Subject(strings.TrimSpace(s)))
		}
		err = compareSubjects(subjects, *spans, *rounds)
	} else if *cpuprofile != "" {
		var sh bench.Shape
		if sh, err = bench.ParseShape(*shape); err == nil {
			err = profile(*cpuprofile, bench.Subject(*subject), sh, *spans, *rounds)
		}
	} else {
		err = run(*spans, *rounds, *maxHeld)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtable:", err)
		os.Exit(1)
	}
}

// profile runs rounds of one subject with a CPU profile of each timed pass.
func profile(file string, s bench.Subject, shape bench.Shape, spans, rounds int) error {
	in := bench.Generate(shape, spans)
	var (
		out     *os.File
		files   []string
		profErr error
	)
	bench.TimedPass = func(start bool) {
		if !start {
			pprof.StopCPUProfile()
			profErr = errors.Join(profErr, out.Close())
			return
		}
		var err error
		if out, err = os.Create(fmt.Sprintf("%s.%d", file, len(files)+1)); err == nil {
			files = append(files, out.Name())
			err = pprof.StartCPUProfile(out)
		}
		profErr = errors.Join(profErr, err)
	}
	defer func() { bench.TimedPass = nil }()
	for range rounds {
		r, err := bench.RunRound(s, in)
		if err != nil {
			return err
		}
		if profErr != nil {
			return profErr
		}
		fmt.Printf("%s, %s: %.0f CPU ns/span\n", s, shape, cpuPerSpan(r))
	}
	fmt.Printf("%d profiles; read them with: go tool pprof -top %s.*\n", len(files), file)
	return nil
}

// compareSubjects runs the subjects in turn, round by round, and prints
// each one's median cost and its cost relative to the first subject's in
// the same round (median and quartiles over the rounds): on a shared
// machine a slow spell then hits a round's subjects alike.
func compareSubjects(subjects []bench.Subject, spans, rounds int) error {
	fmt.Printf("machine: %s/%s, %d CPUs, %s; %d spans per round, %d rounds, subjects taking turns\n\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), spans, rounds)
	fmt.Printf("| shape | subject | CPU ns/span (median) | ratio vs %s: median | lower quartile | upper quartile | lowest | highest |\n", subjects[0])
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, shape := range bench.Shapes {
		in := bench.Generate(shape, spans)
		rows := make([][]bench.Round, len(subjects))
		for range rounds {
			for i, s := range subjects {
				r, err := bench.RunRound(s, in)
				if err != nil {
					return err
				}
				rows[i] = append(rows[i], r)
			}
		}
		for i, s := range subjects {
			ratios := roundRatios(rows[i], rows[0])
			fmt.Printf("| %s | %s | %.0f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", shape, s, median(rows[i], cpuPerSpan),
				ratios[len(ratios)/2], ratios[len(ratios)/4], ratios[(3*len(ratios))/4], ratios[0], ratios[len(ratios)-1])
		}
	}
	return nil
}

func median(rs []bench.Round, f func(bench.Round) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	sort.Float64s(v)
	return v[len(v)/2]
}

func cpuPerSpan(r bench.Round) float64 { return float64(r.CPU.Nanoseconds()) / float64(r.Spans) }

// roundRatios are the CPU ratios a/b of the rounds, round by round (a[i]
// and b[i] ran back to back), in ascending order.
func roundRatios(a, b []bench.Round) []float64 {
	ratios := make([]float64, len(a))
	for i := range a {
		ratios[i] = cpuPerSpan(a[i]) / cpuPerSpan(b[i])
	}
	sort.Float64s(ratios)
	return ratios
}

// roundRange is the lowest and highest CPU ratio a/b over the rounds.
func roundRange(a, b []bench.Round) string {
	ratios := roundRatios(a, b)
	return fmt.Sprintf("%.2f–%.2f×", ratios[0], ratios[len(ratios)-1])
}

func run(spans, rounds, maxHeld int) error {
	fmt.Printf("machine: %s/%s, %d CPUs (GOMAXPROCS %d), %s\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.Version())
	fmt.Printf("input: meshsim traffic of each shape (see bench/README.md), %d spans per round, wait_duration %v, median of %d rounds\n\n", spans, bench.Wait, rounds)

	fmt.Println("| shape | subject | spans/s per core | CPU ns/span | wall ns/span | allocs/span | spans lost | CPU ratio vs groupbytrace | CPU ratio vs floor | CPU ratio vs rewrite floor | CPU ratio vs index floor |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	type ingestRow struct {
		shape            bench.Shape
		subject          bench.Subject
		one, two         float64 // ingest wall ns/span
		waitOne, waitTwo float64 // lock wait ns/span
		lost, sent       int64
	}
	var ingest []ingestRow
	var spread []string
	throughput := map[bench.Shape]float64{} // tracestitch's spans/s over groupbytrace's
	ingestPerSpan := func(r bench.Round) float64 { return float64(r.Ingest.Nanoseconds()) / float64(r.Spans) }
	waitPerSpan := func(r bench.Round) float64 { return float64(r.LockWait.Nanoseconds()) / float64(r.Spans) }
	for _, shape := range bench.Shapes {
		in := bench.Generate(shape, spans)
		cpu := map[bench.Subject]float64{}
		rows := map[bench.Subject][]bench.Round{}
		parallel := map[bench.Subject][]bench.Round{}
		// Subjects take turns round by round, so that a slow spell of a
		// shared machine hits all of them rather than one.
		for i := 0; i < rounds; i++ {
			for _, s := range bench.Subjects {
				r, err := bench.RunRound(s, in)
				if err != nil {
					return err
				}
				rows[s] = append(rows[s], r)
				if r, err = bench.ParallelRound(s, in, 2); err != nil {
					return err
				}
				parallel[s] = append(parallel[s], r)
			}
		}
		for _, s := range bench.Subjects {
			row := ingestRow{
				shape: shape, subject: s,
				one: median(rows[s], ingestPerSpan), two: median(parallel[s], ingestPerSpan),
				waitOne: median(rows[s], waitPerSpan), waitTwo: median(parallel[s], waitPerSpan),
			}
			for _, r := range parallel[s] {
				row.lost += r.Lost
				row.sent += int64(r.Spans)
			}
			ingest = append(ingest, row)
		}
		for _, s := range bench.Subjects {
			cpu[s] = median(rows[s], cpuPerSpan)
		}
		for _, s := range bench.Subjects {
			rs := rows[s]
			wall := median(rs, func(r bench.Round) float64 { return float64(r.Wall.Nanoseconds()) / float64(r.Spans) })
			allocs := median(rs, func(r bench.Round) float64 { return float64(r.Allocs) / float64(r.Spans) })
			var lost int64
			for _, r := range rs {
				lost += r.Lost
			}
			fmt.Printf("| %s | %s | %.0f | %.0f | %.0f | %.1f | %d of %d | %.3f | %.2f | %.2f | %.2f |\n",
				shape, s, 1e9/cpu[s], cpu[s], wall, allocs, lost, len(rs)*in.Spans,
				cpu[s]/cpu[bench.Groupbytrace], cpu[s]/cpu[bench.Floor], cpu[s]/cpu[bench.RewriteFloor], cpu[s]/cpu[bench.IndexFloor])
		}
		throughput[shape] = cpu[bench.Groupbytrace] / cpu[bench.Tracestitch]
		spread = append(spread, fmt.Sprintf("%s: throughput vs groupbytrace %s, cost vs floor %s, cost vs rewrite floor %s, cost vs index floor %s; the index floor's cost vs floor %s",
			shape, roundRange(rows[bench.Groupbytrace], rows[bench.Tracestitch]),
			roundRange(rows[bench.Tracestitch], rows[bench.Floor]), roundRange(rows[bench.Tracestitch], rows[bench.RewriteFloor]),
			roundRange(rows[bench.Tracestitch], rows[bench.IndexFloor]), roundRange(rows[bench.IndexFloor], rows[bench.Floor])))
	}

	fmt.Println("\nthe same ratios round by round (each round's passes ran back to back), lowest–highest:")
	fmt.Println()
	for _, l := range spread {
		fmt.Println("* " + l)
	}

	fmt.Println("\ningest with concurrent callers (same rounds; ingest: wall time until every ConsumeTraces returned; lock wait: time goroutines were blocked on locks, runtime's /sync/mutex/wait/total; 2 callers feed alternate batches; per span):")
	fmt.Println("\n| shape | subject | 1 caller: ingest ns/span | lock wait ns/span | 2 callers: ingest ns/span | lock wait ns/span | speedup | spans lost with 2 callers |")
	fmt.Println("|---|---|---|---|---|---|---|---|")
	for _, r := range ingest {
		fmt.Printf("| %s | %s | %.0f | %.0f | %.0f | %.0f | %.2f | %d of %d |\n", r.shape, r.subject, r.one, r.waitOne, r.two, r.waitTwo, r.one/r.two, r.lost, r.sent)
	}

	// Each volume's input is generated, used and dropped in turn: a live
	// million-span input would make every GC cycle of a small round mark it.
	// groupbytrace is measured last: it keeps a timer per trace for its
	// whole wait, so what it buffered stays live after Shutdown and would
	// inflate the GC cost of anything measured after it.
	volumes := []int{1_000, 100_000, 1_000_000}
	type row struct {
		shape           bench.Shape
		spans           int
		ts, floor       float64
		heldTS, heldFlr float64
		heldGBT         float64
	}
	var rowsV []row
	for _, shape := range bench.Shapes {
		for _, v := range volumes {
			if v > maxHeld {
				break
			}
			in := bench.Generate(shape, v)
			// small volumes are short rounds: more of them, so that fixed
			// costs and noise do not decide the median
			n := rounds
			if in.Spans < 100_000 {
				n = 5 * rounds
			}
			var ts, fl []bench.Round
			// Round -1 is not counted: the first round at a bigger volume
			// grows the process's heap, and the page faults of that growth
			// are CPU time too (system time; a million spans took 3-4× longer
			// in it).
			for r := -1; r < n; r++ {
				t, err := bench.FlushRound(bench.Tracestitch, in)
				if err != nil {
					return err
				}
				f, err := bench.FlushRound(bench.Floor, in)
				if err != nil {
					return err
				}
				if r >= 0 {
					ts, fl = append(ts, t), append(fl, f)
				}
			}
			hts, err := bench.HeldPerSpan(bench.Tracestitch, in)
			if err != nil {
				return err
			}
			hfl, err := bench.HeldPerSpan(bench.Floor, in)
			if err != nil {
				return err
			}
			rowsV = append(rowsV, row{shape: shape, spans: in.Spans, ts: median(ts, cpuPerSpan), floor: median(fl, cpuPerSpan), heldTS: hts, heldFlr: hfl})
		}
	}
	for i := range rowsV {
		in := bench.Generate(rowsV[i].shape, rowsV[i].spans)
		g, err := bench.HeldPerSpan(bench.Groupbytrace, in)
		if err != nil {
			return err
		}
		rowsV[i].heldGBT = g
	}

	fmt.Println("\ncost per span by buffered volume (everything buffered, then released by Shutdown):")
	fmt.Println("\n| shape | buffered spans | tracestitch CPU ns/span | ratio vs smallest | floor CPU ns/span | tracestitch / floor |")
	fmt.Println("|---|---|---|---|---|---|")
	smallest := map[bench.Shape]float64{}
	flat := map[bench.Shape]float64{} // largest volume's cost over the smallest's
	for _, r := range rowsV {
		if _, ok := smallest[r.shape]; !ok {
			smallest[r.shape] = r.ts
		}
		flat[r.shape] = r.ts / smallest[r.shape]
		fmt.Printf("| %s | %d | %.0f | %.2f | %.0f | %.2f |\n", r.shape, r.spans, r.ts, r.ts/smallest[r.shape], r.floor, r.ts/r.floor)
	}

	fmt.Println("\nbytes held per buffered span (live heap / buffered spans, nothing released):")
	fmt.Println("\n| shape | buffered spans | tracestitch | groupbytrace | floor | tracestitch / groupbytrace |")
	fmt.Println("|---|---|---|---|---|---|")
	held := map[bench.Shape]float64{} // worst tracestitch / groupbytrace over the volumes
	for _, r := range rowsV {
		held[r.shape] = max(held[r.shape], r.heldTS/r.heldGBT)
		fmt.Printf("| %s | %d | %.0f | %.0f | %.0f | %.2f |\n", r.shape, r.spans, r.heldTS, r.heldGBT, r.heldFlr, r.heldTS/r.heldGBT)
	}

	fmt.Println("\ntargets on every shape (throughput ≥ 10× groupbytrace's; held bytes per span ≤ groupbytrace's at every volume; cost per span at the largest volume within 1.2× of the smallest's):")
	fmt.Println("\n| shape | throughput vs groupbytrace | | held bytes vs groupbytrace (worst) | | cost, largest / smallest volume | |")
	fmt.Println("|---|---|---|---|---|---|---|")
	mark := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	for _, shape := range bench.Shapes {
		fmt.Printf("| %s | %.1f× | %s | %.2f | %s | %.2f | %s |\n", shape,
			throughput[shape], mark(throughput[shape] >= 10), held[shape], mark(held[shape] <= 1), flat[shape], mark(flat[shape] <= 1.2))
	}
	return nil
}
