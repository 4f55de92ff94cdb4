// Package metrics exports what every Strata role does as Prometheus
// metrics, and tracks what the global tier's dashboard shows beyond the
// ledger (participation and rejections per region per round, round
// latency, alerts).
//
// Collectors read the tiers' own counters at scrape time (regional.Runner
// Stats, edge.Fleet Stats, the NATS connections' statistics, the ledger),
// so the tiers need no metrics code of their own: only two hooks
// (regional.Config.OnPartial for aggregation latency, mesh.Dialer.OnConnect
// for a fleet's connections) feed histograms and byte counters.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewRegistry returns a registry holding the Go runtime and process
// collectors; each role adds its own.
func NewRegistry() *prometheus.Registry {
	r := prometheus.NewRegistry()
	r.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return r
}

// Handler serves reg in the Prometheus text format.
func Handler(reg prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// HTTPServer is a listening HTTP server whose lifetime a context owns.
type HTTPServer struct {
	ln  net.Listener
	srv *http.Server
}

// Listen binds addr (host:port; port 0 picks a free one) for h. Binding
// now, before Serve, lets the caller print the real address.
func Listen(addr string, h http.Handler) (*HTTPServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen on %q: %w (give host:port, e.g. 127.0.0.1:9090, or :0 for a free port)", addr, err)
	}
	return &HTTPServer{ln: ln, srv: &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}}, nil
}

// Addr is the bound address.
func (s *HTTPServer) Addr() string { return s.ln.Addr().String() }

// URL is http://Addr/ with an unspecified host shown as 127.0.0.1.
func (s *HTTPServer) URL() string {
	host, port, _ := net.SplitHostPort(s.Addr())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}

// Serve serves until ctx ends, then shuts down, giving open requests (and
// event streams) a second to finish.
func (s *HTTPServer) Serve(ctx context.Context) error {
	// Requests live within ctx, so long-lived ones (event streams) end
	// with it rather than holding Shutdown up.
	s.srv.BaseContext = func(net.Listener) context.Context { return ctx }
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics: http server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		s.srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
