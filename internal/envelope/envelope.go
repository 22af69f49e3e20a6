// Package envelope is the message envelope model shared by the listener, the
// spool, the queue manager and the delivery client: the reverse path, the
// recipients with their DSN parameters, and the ESMTP options the message was
// received with. It is a leaf package: it imports nothing internal.
//
// Addresses are kept as received (local part byte for byte) except that the
// domain is lower-cased, because RFC 5321 §2.4 makes domains case-insensitive
// while local parts are the destination's business.
package envelope

import (
	"fmt"
	"strings"
	"time"
)

// Notify is the RFC 3461 NOTIFY parameter of one recipient.
type Notify struct {
	Never   bool `json:"never,omitempty"`
	Success bool `json:"success,omitempty"`
	Failure bool `json:"failure,omitempty"`
	Delay   bool `json:"delay,omitempty"`
	// Set reports whether the client gave NOTIFY at all; without it the
	// default (FAILURE and DELAY, RFC 3461 §4.1) applies.
	Set bool `json:"set,omitempty"`
}

// WantsFailure reports whether a failure DSN may be sent for this recipient.
func (n Notify) WantsFailure() bool { return !n.Set || (n.Failure && !n.Never) }

// WantsDelay reports whether a delay DSN may be sent for this recipient.
func (n Notify) WantsDelay() bool { return !n.Set || (n.Delay && !n.Never) }

// Recipient is one forward path with its DSN parameters.
type Recipient struct {
	Addr   string `json:"addr"`
	Notify Notify `json:"notify,omitempty"`
	// ORCPT is the RFC 3461 original recipient, "addr-type;xtext" as received.
	ORCPT string `json:"orcpt,omitempty"`
}

// Envelope is everything about a message except its content.
type Envelope struct {
	// From is the reverse path; "" is the null sender (bounces).
	From       string      `json:"from"`
	Recipients []Recipient `json:"rcpts"`
	// RET is the RFC 3461 RET parameter: "FULL", "HDRS" or "".
	RET string `json:"ret,omitempty"`
	// EnvID is the RFC 3461 ENVID, xtext as received.
	EnvID    string `json:"envid,omitempty"`
	SMTPUTF8 bool   `json:"smtputf8,omitempty"`
	// Body8Bit is true for BODY=8BITMIME.
	Body8Bit bool `json:"8bit,omitempty"`
	// Received describes the injection: who, when, over what.
	ICID     uint64    `json:"icid,omitempty"`
	ClientIP string    `json:"client_ip,omitempty"`
	Helo     string    `json:"helo,omitempty"`
	Time     time.Time `json:"time"`
	// Gateway is the virtual gateway (outbound source) chosen at receipt;
	// "" for the default.
	Gateway string `json:"gateway,omitempty"`
}

// Domain returns the lower-cased domain of addr ("" when addr has none).
func Domain(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return strings.ToLower(strings.TrimSuffix(addr[i+1:], "."))
}

// Split returns the local part and the lower-cased domain of a mailbox.
func Split(addr string) (local, domain string, err error) {
	i := strings.LastIndexByte(addr, '@')
	if i <= 0 || i == len(addr)-1 {
		return "", "", fmt.Errorf("address %q: not local@domain", addr)
	}
	return addr[:i], strings.ToLower(addr[i+1:]), nil
}
