package maillog

// DANE events (RFC 7672). The appliance documents only its `daneverify`
// output ("SECURE TLSA record found for MX(host) in domain", "DANE SUCCESS
// for domain"); the lines below reuse that wording where it exists and
// add the DCID so that a delivery can be followed. The shapes are
// documented in docs/mail_logs.md and docs/tls-policy.md.
//
// Plan-time lines (no DCID) say what DANE decided for each MX host; the
// DCID lines say what the connection found.

// DANETLSAFound: the MX host has secure, usable TLSA records; the
// connection must authenticate by them. records lists their parameters
// ("3 1 1, 2 0 1").
func (l *Logger) DANETLSAFound(domain, host, records string) {
	if l.Enabled(Info) {
		l.Infof("SECURE TLSA record found for MX(%s) in %s (%s)", host, domain, records)
	}
}

// DANENotApplicable: DANE is enabled but does not apply to this MX host
// (opportunistic); MTA-STS or the TLS setting decides.
func (l *Logger) DANENotApplicable(domain, host, reason string) {
	if l.Enabled(Info) {
		l.Infof("DANE not applicable for MX(%s) in %s: %s", host, domain, quote(reason))
	}
}

// DANEEncryptOnly: the host publishes only unusable TLSA records: TLS is
// required, without DANE authentication.
func (l *Logger) DANEEncryptOnly(domain, host, reason string) {
	if l.Enabled(Info) {
		l.Infof("DANE: TLS required without authentication for MX(%s) in %s: %s", host, domain, quote(reason))
	}
}

// DANESkipMX: a lookup for a secure MX host failed; no connection is made
// to it on this attempt.
func (l *Logger) DANESkipMX(domain, host, reason string) {
	if l.Enabled(Info) {
		l.Infof("DANE: skipping MX(%s) in %s: %s", host, domain, quote(reason))
	}
}

// DANEDeferred: no MX host of the domain can be delivered to under its
// DANE setting; the messages stay queued (and bounce at expiry with the
// same reason).
func (l *Logger) DANEDeferred(domain, code, reason string) {
	if l.Enabled(Info) {
		l.Infof("DANE deferred delivery for %s: %s %s", domain, code, quote(reason))
	}
}

// DCIDDANESuccess: the server was authenticated by a TLSA record
// ("3 1 1").
func (l *Logger) DCIDDANESuccess(dcid uint64, domain, host, record string) {
	if l.Enabled(Info) {
		l.Infof("DCID %d DANE SUCCESS for %s: TLSA %s matched MX(%s)", dcid, domain, record, host)
	}
}

// DCIDDANEFailure: the server could not be authenticated by the TLSA
// records (or TLS could not be negotiated with a host that requires it);
// the connection is closed without sending mail.
func (l *Logger) DCIDDANEFailure(dcid uint64, domain, host, reason string) {
	if l.Enabled(Info) {
		l.Infof("DCID %d DANE failure for %s: MX(%s) %s", dcid, domain, host, quote(reason))
	}
}
