package maillog

// Bounce verification (prvs address tagging) events, in the appliance's
// wording.

// MIDInvalidBounce: a bounce (MAIL FROM:<>) recipient was refused because
// its bounce-verification tag is missing or invalid.
func (l *Logger) MIDInvalidBounce(mid, icid uint64, rcpt string) {
	if l.Enabled(Info) {
		l.Infof("MID %d ICID %d invalid bounce, rcpt address <%s> rejected by bounce verification.", mid, icid, rcpt)
	}
}
