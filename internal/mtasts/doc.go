// Package mtasts implements SMTP MTA Strict Transport Security (RFC 8461)
// for a sending MTA: discovery of the _mta-sts TXT record, the HTTPS policy
// fetch, strict parsing of both, MX pattern matching, a policy cache that
// survives restarts, and a domain checker for administrators.
//
// Responsibility: answer "which MTA-STS policy applies to mail for this
// domain right now?" (Manager.Get) quickly and safely. Applying the answer
// (restricting MX hosts, requiring TLS 1.2+ and a valid certificate) is the
// job of tlspolicy and the delivery client.
//
// Invariants:
//   - A cached, unexpired policy is never dropped because of a DNS or HTTPS
//     failure, or because the TXT record disappeared (RFC 8461 §3.3, §5.1).
//   - A temporary DNS failure with nothing cached is reported as a temporary
//     error (errors.Is(err, ErrTemporary)), never as "no policy": the caller
//     defers the message rather than sending it without protection.
//   - Every network call is bounded by a timeout; concurrent requests for one
//     domain share one discovery.
//   - Decisions for cached domains are made from memory; the Store is only
//     for restarts.
//
// How it fails: parsing failures and fetch failures mean "no new policy"
// (typed *SyntaxError and *FetchError say why); store failures are logged
// through slog and the in-memory cache keeps working.
//
// DNS is reached through the consumer-owned TXTResolver interface: the
// application adapts its resolver to it. A TXT record made of several
// character-strings must be returned as one string (the strings
// concatenated with nothing between them, RFC 7208 §3.3 style), one element
// per TXT record.
package mtasts
