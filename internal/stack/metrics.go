package stack

import (
	"bufio"
	"context"
	"strconv"
	"strings"
)

// Metrics are the series of one Prometheus scrape: series (name with its
// labels, as exposed) → value.
type Metrics map[string]float64

// Scrape reads a Prometheus text endpoint.
func Scrape(ctx context.Context, url string) (Metrics, error) {
	body, err := get(ctx, url)
	if err != nil {
		return nil, err
	}
	out := Metrics{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

// Sum adds the values of every series of the metric name whose labels
// include each of labels, given as `key="value"`.
func (m Metrics) Sum(name string, labels ...string) float64 {
	var sum float64
	for series, v := range m {
		rest, ok := strings.CutPrefix(series, name)
		if !ok || (rest != "" && rest[0] != '{') {
			continue
		}
		if hasLabels(rest, labels) {
			sum += v
		}
	}
	return sum
}

// hasLabels reports whether a series' label set `{a="x",b="y"}` holds each
// of labels.
func hasLabels(set string, labels []string) bool {
	set = strings.TrimSuffix(strings.TrimPrefix(set, "{"), "}")
	for _, l := range labels {
		found := false
		for _, have := range splitLabels(set) {
			if have == l {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// splitLabels splits `a="x",b="y,z"` at the commas between labels.
func splitLabels(set string) []string {
	var out []string
	inQuote, start := false, 0
	for i := 0; i < len(set); i++ {
		switch set[i] {
		case '\\':
			i++
		case '"':
			inQuote = !inQuote
		case ',':
			if !inQuote {
				out = append(out, set[start:i])
				start = i + 1
			}
		}
	}
	if start < len(set) {
		out = append(out, set[start:])
	}
	return out
}
