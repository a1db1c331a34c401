package stack

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// Sink is a Zipkin v2 backend that counts the spans of each POST by their
// "traceId" keys and decodes nothing, so that it takes little CPU from the
// collector under test. PerSpan, if set, makes it take that long per span
// of a POST: a backend slower than its senders.
type Sink struct {
	URL     string // …/api/v2/spans
	PerSpan time.Duration
	spans   atomic.Int64
	srv     *http.Server
}

// StartSink serves a Sink on a free loopback port until Close.
func StartSink(perSpan time.Duration) (*Sink, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Sink{URL: "http://" + l.Addr().String() + "/api/v2/spans", PerSpan: perSpan}
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		n := CountZipkinSpans(b)
		time.Sleep(time.Duration(n) * s.PerSpan)
		s.spans.Add(int64(n))
		w.WriteHeader(http.StatusAccepted)
	})}
	go func() { _ = s.srv.Serve(l) }()
	return s, nil
}

// Spans is how many spans the sink accepted so far.
func (s *Sink) Spans() int64 { return s.spans.Load() }

// Close stops serving.
func (s *Sink) Close() { _ = s.srv.Close() }

// CountZipkinSpans counts the spans of a Zipkin v2 JSON body.
func CountZipkinSpans(body []byte) int { return bytes.Count(body, []byte(`"traceId"`)) }

// Post is one request body for a receiver.
type Post struct {
	Receiver    string // key of the URL map PostAll is given, e.g. "zipkin"
	ContentType string
	Body        []byte
	Spans       int
}

// PostAll posts every body with `workers` concurrent senders, each to
// urls[p.Receiver], and returns the spans of the posts that were not
// answered 2xx and how many posts got each status (0: no answer).
func PostAll(ctx context.Context, urls map[string]string, posts []Post, workers int) (refused int, statuses map[int]int) {
	client := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	work := make(chan Post)
	statuses = map[int]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for p := range work {
				code := post(ctx, client, urls[p.Receiver], p)
				mu.Lock()
				statuses[code]++
				if code/100 != 2 {
					refused += p.Spans
				}
				mu.Unlock()
			}
		})
	}
	for _, p := range posts {
		work <- p
	}
	close(work)
	wg.Wait()
	return refused, statuses
}

// post sends one body and returns the status code, 0 without an answer.
func post(ctx context.Context, client *http.Client, url string, p Post) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(p.Body))
	if err != nil {
		return 0
	}
	req.Header.Set("Content-Type", p.ContentType)
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// PeakRSS samples the summed RSS of procs every 20 ms until the returned
// function is called, which returns the peak.
func PeakRSS(procs ...*Proc) (stop func() int64) {
	done, stopped := make(chan struct{}), make(chan struct{})
	var peak int64
	go func() {
		defer close(stopped)
		for {
			var sum int64
			for _, p := range procs {
				if v, err := p.RSS(); err == nil {
					sum += v
				}
			}
			peak = max(peak, sum)
			select {
			case <-done:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() int64 { close(done); <-stopped; return peak }
}
