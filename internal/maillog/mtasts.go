package maillog

// MTA-STS events (RFC 8461), in the appliance's exact wording. The
// level checks come first so that a disabled level costs nothing on the
// delivery path.

// MTASTSTXTFetched: a valid _mta-sts TXT record was found.
func (l *Logger) MTASTSTXTFetched(domain string) {
	if l.Enabled(Info) {
		l.Infof("Successfully fetched MTA-STS TXT record for domain(%s)", domain)
	}
}

// MTASTSFetchPolicy: an HTTPS policy fetch starts (Debug).
func (l *Logger) MTASTSFetchPolicy(domain string) {
	if l.Enabled(Debug) {
		l.Debugf("Fetch MTA-STS policy for the domain(%s)", domain)
	}
}

// MTASTSFetchViaProxy: the fetch goes through the configured proxy (Debug).
func (l *Logger) MTASTSFetchViaProxy() {
	if l.Enabled(Debug) {
		l.Debugf("Requesting MTA-STS policy fetch via proxy")
	}
}

// MTASTSFetchTimeout: the fetch ran out of time (Debug); followed by
// MTASTSFetchFailed.
func (l *Logger) MTASTSFetchTimeout(domain string) {
	if l.Enabled(Debug) {
		l.Debugf("Request to fetch STS policy failed due to a connection timeout., for the domain %s", domain)
	}
}

// MTASTSFetchFailed: the policy fetch failed for any reason.
func (l *Logger) MTASTSFetchFailed(domain string) {
	if l.Enabled(Info) {
		l.Infof("Failure encountered while fetching MTA-STS policy for the domain(%s)", domain)
	}
}

// MTASTSCacheHit: a cached, unexpired policy is used (Debug).
func (l *Logger) MTASTSCacheHit(domain string) {
	if l.Enabled(Debug) {
		l.Debugf("Valid cache entry found for the domain (%s).", domain)
	}
}

// MTASTSApplying: delivery starts applying the domain's policy.
func (l *Logger) MTASTSApplying(domain string) {
	if l.Enabled(Info) {
		l.Infof("Applying MTA-STS policy for the domain (%s)", domain)
	}
}

// MTASTSSuccess: a delivery connection satisfied the domain's policy.
func (l *Logger) MTASTSSuccess(domain string) {
	if l.Enabled(Info) {
		l.Infof("MTA-STS policy for the domain (%s) Successful.", domain)
	}
}

// MTASTSFailed: a delivery connection did not satisfy the policy; reason
// names the cause ("MX not in policy", "certificate ...", "TLS version
// ...", "STARTTLS missing"). Outpost's own line: the appliance's wording
// for it is not documented.
func (l *Logger) MTASTSFailed(domain, reason string) {
	if l.Enabled(Info) {
		l.Infof("MTA-STS policy for the domain (%s) Failed: %s", domain, quote(reason))
	}
}

// MTASTSTXTQuery: the _mta-sts TXT lookup (Debug), in the resolver's
// "DNS query" style.
func (l *Logger) MTASTSTXTQuery(domain string) {
	if l.Enabled(Debug) {
		l.DNSQuery("_mta-sts."+domain, "TXT")
	}
}
