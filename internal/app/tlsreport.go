package app

import (
	"errors"
	"strings"
	"sync"
	"time"

	"outpost/internal/config"
	"outpost/internal/deliver"
	"outpost/internal/tlspolicy"
	"outpost/internal/webui"
)

// tlsReport collects TLS connection outcomes per destination domain for
// the web UI's TLS connections report (the Prometheus counter has the mode
// only). It is fed by dialer.Connect, once per connection attempt, and
// lives in memory: it starts empty with the process. The zero value is
// ready to use.
type tlsReport struct {
	mu sync.Mutex
	m  map[string]*webui.TLSStat
}

// maxTLSReportDomains bounds the report's memory; past it the least
// recently used domain is forgotten.
const maxTLSReportDomains = 10000

// observe records one connection attempt to domain under host h's
// requirement: c is the connection (nil when err is set).
func (t *tlsReport) observe(p config.Profile, domain string, h tlspolicy.Host, c *deliver.Conn, err error) {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]*webui.TLSStat{}
	}
	st := t.m[domain]
	if st == nil {
		if len(t.m) >= maxTLSReportDomains {
			t.evictLocked()
		}
		st = &webui.TLSStat{Domain: domain}
		t.m[domain] = st
	}
	st.Last = now
	switch {
	case !p.MTASTS:
		st.MTASTSMode = "off"
	case h.TLS.Source == tlspolicy.SourceRoute:
		st.MTASTSMode = "not applied (SMTP route)"
	case h.TLS.Source == tlspolicy.SourceMTASTS:
		st.MTASTSMode = "enforce"
	case h.TLS.STSTesting:
		st.MTASTSMode = "testing"
	case h.TLS.Source == tlspolicy.SourceDANE:
		st.MTASTSMode = "skipped (DANE)"
	default:
		st.MTASTSMode = "none (no policy)"
	}
	outcome := "success"
	if err != nil {
		outcome = "failed"
	}
	if h.TLS.Source == tlspolicy.SourceMTASTS {
		st.MTASTSOutcome = outcome
	} else if st.MTASTSMode != "enforce" {
		st.MTASTSOutcome = ""
	}
	if h.TLS.Source == tlspolicy.SourceDANE {
		st.DANEOutcome = outcome
	}
	if err != nil {
		r := deliver.AsReply(err)
		var de *deliver.Error
		if errors.As(err, &de) && (de.Stage == deliver.StageTLS || strings.HasPrefix(r.Enhanced, "4.7.")) {
			st.Failed++
		}
		st.LastError, st.LastErrorAt = h.Name+": "+r.String(), now
		return
	}
	if _, ok := c.TLSState(); ok {
		st.Success++
	} else {
		st.Plaintext++
	}
}

func (t *tlsReport) evictLocked() {
	var oldest string
	for d, st := range t.m {
		if oldest == "" || st.Last.Before(t.m[oldest].Last) {
			oldest = d
		}
	}
	delete(t.m, oldest)
}

// snapshot copies the report.
func (t *tlsReport) snapshot() []webui.TLSStat {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]webui.TLSStat, 0, len(t.m))
	for _, st := range t.m {
		out = append(out, *st)
	}
	return out
}
