package app

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"outpost/internal/envelope"
	"outpost/internal/spool"
	"outpost/internal/tlspolicy"
)

// tlsAlerts rate-limits the "required TLS failed" alert per domain
// (destconfig SETUP: send an alert when a required TLS connection fails).
type tlsAlerts struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// tlsRequiredFailed raises the alert for domain when the live
// configuration asks for it and the domain's last alert is older than the
// interval: a Warning mail-log line, and a notification mail when an
// address is configured.
func (a *App) tlsRequiredFailed(domain string, h tlspolicy.Host, reason string) {
	cfg := a.config()
	al := cfg.TLS.Alert
	if !al.Enabled || !h.TLS.Mode.MustTLS() {
		return
	}
	now := time.Now()
	a.alerts.mu.Lock()
	if a.alerts.last == nil {
		a.alerts.last = map[string]time.Time{}
	}
	if t, ok := a.alerts.last[domain]; ok && now.Sub(t) < al.Interval.D() {
		a.alerts.mu.Unlock()
		return
	}
	a.alerts.last[domain] = now
	a.alerts.mu.Unlock()
	a.log.Warnf("TLS was required for delivery to %s (host %s) but failed: %s", domain, h.Name, reason)
	if al.To == "" {
		return
	}
	subject := fmt.Sprintf("Warning <System> %s: TLS required delivery to %s failed", cfg.Hostname, domain)
	body := fmt.Sprintf("From: Outpost <MAILER-DAEMON@%s>\r\nTo: <%s>\r\nSubject: %s\r\nDate: %s\r\nAuto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"+
		"Delivery to %s requires TLS (%s), and a connection to %s failed:\r\n\r\n  %s\r\n\r\nThe mail stays queued and is retried. This alert is sent at most once per %s per domain.\r\n",
		cfg.Hostname, al.To, subject, now.Format(time.RFC1123Z), domain, h.TLS.Why, h.Name, strings.ReplaceAll(reason, "\n", " "), al.Interval.D())
	env := &envelope.Envelope{From: "", Recipients: []envelope.Recipient{{Addr: al.To}}, Time: now, Helo: cfg.Hostname, ClientIP: "127.0.0.1"}
	mid := a.spool.NewMID()
	n, err := a.spool.Accept(mid, env, strings.NewReader(body))
	if err != nil {
		a.log.Warnf("TLS failure alert for %s could not be queued: %v", domain, err)
		return
	}
	a.log.Infof("A System/Warning alert was sent to %s with subject \"%s\"", al.To, subject)
	a.q.Submit(&spool.Record{MID: mid, Env: *env, Size: n, States: make([]spool.State, 1)})
}
