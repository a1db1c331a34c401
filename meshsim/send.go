package meshsim

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"go.opentelemetry.io/collector/pdata/ptrace/ptraceotlp"
)

// Sender posts spans to a collector: Envoy spans as Zipkin v2 JSON to
// ZipkinURL (…/api/v2/spans), app spans as OTLP/HTTP protobuf to OTLPURL
// (…/v1/traces). An empty URL skips that kind.
type Sender struct {
	ZipkinURL string
	OTLPURL   string
	Client    *http.Client
}

// Replay sends spans batch by batch, spaced as they arrived (window is the
// sidecars' flush interval), and stops when ctx ends. It returns how many
// spans were sent.
func (s *Sender) Replay(ctx context.Context, spans []*Span, window time.Duration) (int, error) {
	return Replay(ctx, spans, window, s.Send)
}

// Replay hands spans to send batch by batch, spaced as they arrived
// (window is the sidecars' flush interval), and stops when ctx ends or send
// fails. It returns how many spans were sent.
func Replay(ctx context.Context, spans []*Span, window time.Duration, send func(context.Context, []*Span) error) (int, error) {
	batches := Batches(spans, window)
	if len(batches) == 0 {
		return 0, nil
	}
	t0 := batches[0][0].Arrival
	wall := time.Now()
	sent := 0
	for _, b := range batches {
		wait := b[0].Arrival.Sub(t0) - time.Since(wall)
		if wait > 0 {
			select {
			case <-ctx.Done():
				return sent, ctx.Err()
			case <-time.After(wait):
			}
		}
		if err := send(ctx, b); err != nil {
			return sent, err
		}
		sent += len(b)
	}
	return sent, nil
}

// Send posts one batch.
func (s *Sender) Send(ctx context.Context, spans []*Span) error {
	if s.Client == nil {
		s.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if s.ZipkinURL != "" {
		body, err := ZipkinJSON(spans)
		if err != nil {
			return err
		}
		if string(body) != "[]" {
			if err := s.post(ctx, s.ZipkinURL, "application/json", body); err != nil {
				return err
			}
		}
	}
	if s.OTLPURL != "" {
		td := OTLP(spans)
		if td.SpanCount() > 0 {
			body, err := ptraceotlp.NewExportRequestFromTraces(td).MarshalProto()
			if err != nil {
				return err
			}
			if err := s.post(ctx, s.OTLPURL, "application/x-protobuf", body); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Sender) post(ctx context.Context, url, contentType string, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := s.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s: %s", url, resp.Status, msg)
	}
	return nil
}

// TruthRecord is one span's ground truth, as written to truth files.
type TruthRecord struct {
	Span        string `json:"span"`   // span ID/KIND
	Parent      string `json:"parent"` // true parent ID/KIND, "" for a root
	TraceID     string `json:"trace_id"`
	Request     int    `json:"request"`
	Service     string `json:"service"`
	Fragment    bool   `json:"fragment,omitempty"`
	Recoverable bool   `json:"recoverable,omitempty"`
}

// WriteTruth writes one JSON record per span.
func WriteTruth(w io.Writer, spans []*Span) error {
	enc := json.NewEncoder(w)
	for _, s := range spans {
		if err := enc.Encode(TruthRecord{
			Span: s.Key, Parent: s.TrueParent, TraceID: s.Trace32(), Request: s.Request,
			Service: s.Service, Fragment: s.Fragment, Recoverable: s.Recoverable,
		}); err != nil {
			return err
		}
	}
	return nil
}
