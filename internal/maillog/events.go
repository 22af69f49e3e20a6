package maillog

import (
	"strconv"
	"strings"
	"time"
)

// Inbound (injection) events.

// NewICID: a client connected to a listener.
func (l *Logger) NewICID(icid uint64, iface, ifaceIP, addr, rdns string, verified bool) {
	if rdns == "" {
		rdns = "(unknown)"
	}
	l.Infof("New SMTP ICID %d interface %s (%s) address %s reverse dns host %s verified %s", icid, iface, ifaceIP, addr, rdns, yesno(verified))
}

// ICIDPolicy: the connection's relay decision. verdict is ACCEPT, RELAY or
// REJECT; match names the network that matched ("ALL" when none did).
func (l *Logger) ICIDPolicy(icid uint64, verdict, group, match string) {
	l.Infof("ICID %d %s SG %s match %s", icid, verdict, group, match)
}

// ICIDTLS: inbound STARTTLS outcome.
func (l *Logger) ICIDTLS(icid uint64, ok bool, protocol, cipher, reason string) {
	if ok {
		l.Infof("ICID %d TLS success protocol %s cipher %s", icid, protocol, cipher)
		return
	}
	l.Infof("ICID %d TLS failed: %s", icid, reason)
}

// ICIDClose: the client connection ended.
func (l *Logger) ICIDClose(icid uint64) { l.Infof("ICID %d close", icid) }

// ICIDReceivingFailed: a transaction was refused during DATA.
func (l *Logger) ICIDReceivingFailed(icid uint64, reason string) {
	l.Infof("ICID %d Receiving Failed: %s", icid, reason)
}

// StartMID: MAIL FROM accepted; the message got its MID.
func (l *Logger) StartMID(mid, icid uint64) { l.Infof("Start MID %d ICID %d", mid, icid) }

// MIDFrom: the envelope sender.
func (l *Logger) MIDFrom(mid, icid uint64, from string) {
	l.Infof("MID %d ICID %d From: <%s>", mid, icid, from)
}

// MIDTo: an accepted recipient.
func (l *Logger) MIDTo(mid, icid uint64, rid int, to string) {
	l.Infof("MID %d ICID %d RID %d To: <%s>", mid, icid, rid, to)
}

// MIDRcptRejected: a refused recipient.
func (l *Logger) MIDRcptRejected(mid, icid uint64, to, reason string) {
	l.Infof("MID %d ICID %d To: <%s> Rejected by %s", mid, icid, to, reason)
}

// MIDMessageID: the Message-ID header.
func (l *Logger) MIDMessageID(mid uint64, msgid string) {
	l.Infof("MID %d Message-ID '%s'", mid, quote(msgid))
}

// MIDSubject: the Subject header.
func (l *Logger) MIDSubject(mid uint64, subject string) {
	l.Infof("MID %d Subject '%s'", mid, quote(subject))
}

// MIDReady: the message is on disk.
func (l *Logger) MIDReady(mid uint64, size int64, from string) {
	l.Infof("MID %d ready %d bytes from <%s>", mid, size, from)
}

// MIDQueued: handed to the queue manager.
func (l *Logger) MIDQueued(mid uint64) { l.Infof("MID %d queued for delivery", mid) }

// MIDAborted: a started transaction produced no message.
func (l *Logger) MIDAborted(mid uint64, reason string) {
	l.Infof("Message aborted MID %d %s", mid, reason)
}

// Outbound (delivery) events.

// NewDCID: a delivery connection was opened.
func (l *Logger) NewDCID(dcid uint64, iface, addr string, port int) {
	l.Infof("New SMTP DCID %d interface %s address %s port %d", dcid, iface, addr, port)
}

// DCIDTLSSuccess: STARTTLS completed.
func (l *Logger) DCIDTLSSuccess(dcid uint64, protocol, cipher string) {
	l.Infof("DCID %d TLS success protocol %s cipher %s", dcid, protocol, cipher)
}

// DCIDTLSFailed: STARTTLS could not be completed.
func (l *Logger) DCIDTLSFailed(dcid uint64, reason string) {
	l.Infof("DCID %d TLS failed: %s", dcid, reason)
}

// DCIDTLSDeferring: TLS was negotiated but its verification failed under a
// mode that requires it.
func (l *Logger) DCIDTLSDeferring(dcid uint64, reason string) {
	l.Infof("DCID %d TLS deferring: %s", dcid, reason)
}

// DCIDTLSVerifyFailedContinuing: verification failed under a mode that only
// prefers it; delivery continues over the encrypted connection.
func (l *Logger) DCIDTLSVerifyFailedContinuing(dcid uint64, reason string) {
	l.Infof("DCID %d TLS verification failed, continuing with encrypted connection: %s", dcid, reason)
}

// DCIDTLSRequired: the mode required TLS and it was not achieved.
func (l *Logger) DCIDTLSRequired(dcid uint64) {
	l.Infof("DCID %d TLS was required but could not be successfully negotiated", dcid)
}

// DCIDPlaintextFallback: preferred TLS failed; retrying in plaintext.
func (l *Logger) DCIDPlaintextFallback(dcid uint64, reason string) {
	l.Infof("DCID %d TLS not negotiated, delivering in plaintext on a new connection: %s", dcid, reason)
}

// DeliveryStart: a transaction for these recipients began.
func (l *Logger) DeliveryStart(dcid, mid uint64, rids []int) {
	l.Infof("Delivery start DCID %d MID %d to RID %s", dcid, mid, ridList(rids))
}

// MessageDone: the destination accepted these recipients.
func (l *Logger) MessageDone(dcid, mid uint64, rids []int) {
	l.Infof("Message done DCID %d MID %d to RID %s", dcid, mid, ridList(rids))
}

// Response: the destination's reply to the message data.
func (l *Logger) Response(mid uint64, rids []int, text string) {
	l.Infof("MID %d RID %s Response '%s'", mid, ridList(rids), quote(text))
}

// Delayed: a temporary failure for one recipient.
func (l *Logger) Delayed(dcid, mid uint64, from, to string, rid int, enhanced, code, text string) {
	l.Infof("Delayed: DCID %d MID %d From: <%s> To: <%s> RID %d - %s - %s ('%s', ['%s'])",
		dcid, mid, from, to, rid, enhanced, Describe(enhanced), code, quote(text))
}

// Bounced: a permanent failure (or queue expiry) for one recipient.
func (l *Logger) Bounced(dcid, mid uint64, from, to string, rid int, enhanced, code, text string) {
	l.Infof("Bounced: DCID %d MID %d From: <%s> To: <%s> RID %d - %s - %s ('%s', ['%s'])",
		dcid, mid, from, to, rid, enhanced, Describe(enhanced), code, quote(text))
}

// Pending: the next attempt time for recipients, with the bounce profile.
func (l *Logger) Pending(mid uint64, rids []int, next time.Time, profile string) {
	l.Infof("MID %d to RID %s pending till %s [%s]", mid, ridList(rids), next.Format("Mon Jan _2 15:04:05 2006"), profile)
}

// MessageFinished: every recipient reached a final state.
func (l *Logger) MessageFinished(mid uint64, how string) {
	l.Infof("Message finished MID %d %s", mid, how)
}

// BounceGenerated: a DSN was created for a message.
func (l *Logger) BounceGenerated(newMID, mid uint64) {
	l.Infof("MID %d was generated for bounce of MID %d", newMID, mid)
}

// DCIDClose: the delivery connection ended.
func (l *Logger) DCIDClose(dcid uint64) { l.Infof("DCID %d close", dcid) }

// ConnectionError: a delivery connection could not be made or broke.
func (l *Logger) ConnectionError(dcid uint64, ip, details, reason string) {
	l.Infof("Connection Error: DCID: %d IP: %s details: %s reason: %s", dcid, ip, details, reason)
}

// DNSQuery: a resolver query (Debug).
func (l *Logger) DNSQuery(name, qtype string) {
	l.Debugf("DNS query: Q(%s, '%s')", name, qtype)
}

// DNSTemporaryFailure: a lookup failed temporarily.
func (l *Logger) DNSTemporaryFailure(name, qtype, reason string) {
	l.Infof("DNS Temporary Failure %s %s - %s", name, qtype, reason)
}

// DNSHardError: a lookup failed permanently.
func (l *Logger) DNSHardError(name, qtype, reason string) {
	l.Infof("DNS Hard Error looking up %s (%s): %s", name, qtype, reason)
}

// Internal helpers.

func yesno(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func ridList(rids []int) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, r := range rids {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Itoa(r))
	}
	b.WriteByte(']')
	return b.String()
}

// quote makes text safe inside '...': control characters become spaces and
// a single quote becomes \'.
func quote(s string) string {
	if len(s) > 500 {
		s = s[:500]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, strings.ReplaceAll(s, "'", `\'`))
}

// Describe names an RFC 3463 enhanced status code the way the appliance's
// Delayed/Bounced lines do ("5.1.1" → "Bad destination mailbox address").
func Describe(enhanced string) string {
	if d, ok := codeNames[enhanced]; ok {
		return d
	}
	if len(enhanced) > 0 {
		switch enhanced[0] {
		case '4':
			return "Other temporary failure"
		case '5':
			return "Other permanent failure"
		}
	}
	return "Unknown error"
}

var codeNames = map[string]string{
	"4.0.0":  "Other temporary failure",
	"5.0.0":  "Other permanent failure",
	"5.1.0":  "Unknown address error",
	"5.1.1":  "Bad destination mailbox address",
	"5.1.2":  "Bad destination host",
	"5.1.10": "Recipient address has null MX",
	"4.2.1":  "Mailbox disabled",
	"4.2.2":  "Mailbox full",
	"5.2.2":  "Mailbox full",
	"5.2.3":  "Message too large for mailbox",
	"4.3.0":  "Other mail system problem",
	"4.3.1":  "Mail system full",
	"4.3.2":  "Not accepting messages at this time",
	"5.3.4":  "Message too big for system",
	"4.4.0":  "Other network problem",
	"4.4.1":  "No answer from host",
	"4.4.2":  "Bad connection",
	"4.4.3":  "Directory server failure",
	"4.4.4":  "Unable to route",
	"4.4.7":  "Delivery time expired",
	"5.4.7":  "Delivery expired (message too old)",
	"4.4.8":  "MTA-STS policy does not list any MX",
	"5.4.8":  "MTA-STS policy does not list any MX",
	"4.5.0":  "Other protocol error",
	"5.5.0":  "Other protocol error",
	"5.6.0":  "Other media error",
	"4.7.0":  "Security or policy problem",
	"5.7.0":  "Delivery not authorized, message refused",
	"5.7.1":  "Delivery not authorized, message refused",
	"4.7.5":  "Cryptographic failure",
	"5.7.5":  "Cryptographic failure",
}
