package smtpd

import (
	"errors"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"outpost/internal/envelope"
	"outpost/internal/reply"
)

// Replies of our own, named once.
var (
	errRelayDenied = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "Relaying denied"}
	errNestedMail  = &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Nested MAIL command"}
	errNoSpace     = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "Insufficient system storage"}
	errTooManyRcpt = &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 5, 3}, Message: "Too many recipients"}
	errBody        = &smtp.SMTPError{Code: 504, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: "BODY value not supported"}
	errBareLine    = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 6, 11}, Message: "Bare CR or LF in message data: lines must end with CRLF"}
	errTooBig      = &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4}, Message: "Message size exceeds fixed maximum message size"}
	errLongLine    = &smtp.SMTPError{Code: 500, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Line too long"}
	errLocal       = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Local error in processing, try again later"}
)

// session is one client's SMTP session between EHLO/HELO and the end (or
// STARTTLS, after which go-smtp starts a new one). go-smtp calls Data from
// a separate goroutine for BDAT, concurrently with Reset, so the
// transaction state is guarded by mu and Data takes it over at its start.
type session struct {
	s    *Server
	cc   *clientConn
	helo string
	tls  bool

	mu  sync.Mutex
	mid uint64             // valid while env != nil
	env *envelope.Envelope // nil: no transaction
}

// Mail opens a transaction (RFC 5321 §4.1.1.2).
func (ss *session) Mail(from string, opts *smtp.MailOptions) error {
	if !ss.cc.relay {
		return errRelayDenied
	}
	ss.mu.Lock()
	open := ss.env != nil
	ss.mu.Unlock()
	if open {
		// RFC 5321 §4.1.4: MAIL inside a transaction is a sequence error.
		return errNestedMail
	}
	if from != "" {
		if rj := checkAddress(from, opts.UTF8, true); rj != nil {
			return rj.err()
		}
	}
	switch opts.Body {
	case "", smtp.Body7Bit, smtp.Body8BitMIME:
	default:
		return errBody
	}
	if err := ss.s.cfg.Receiver.CheckSpace(); err != nil {
		return errNoSpace
	}
	env := &envelope.Envelope{
		From:     from,
		RET:      string(opts.Return),
		SMTPUTF8: opts.UTF8,
		Body8Bit: opts.Body == smtp.Body8BitMIME,
		ICID:     ss.cc.icid,
		ClientIP: ss.cc.remote.String(),
		Helo:     ss.helo,
		Time:     time.Now(),
	}
	if opts.EnvelopeID != "" {
		env.EnvID = xtext(opts.EnvelopeID)
	}
	mid := ss.s.cfg.Receiver.NewMID()
	ss.mu.Lock()
	ss.mid, ss.env = mid, env
	ss.mu.Unlock()
	ss.s.cfg.Log.StartMID(mid, ss.cc.icid)
	ss.s.cfg.Log.MIDFrom(mid, ss.cc.icid, from)
	return nil
}

// Rcpt adds a recipient (RFC 5321 §4.1.1.3).
func (ss *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if !ss.cc.relay {
		return errRelayDenied
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.env == nil {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Need MAIL command"}
	}
	log, mid, icid := ss.s.cfg.Log, ss.mid, ss.cc.icid
	if len(ss.env.Recipients) >= ss.s.cfg.MaxRecipients {
		// RFC 5321 §4.5.3.1.10: 452 for too many recipients.
		log.MIDRcptRejected(mid, icid, to, "recipient limit")
		return errTooManyRcpt
	}
	if rj := checkAddress(to, ss.env.SMTPUTF8, false); rj != nil {
		log.MIDRcptRejected(mid, icid, to, rj.reason)
		return rj.err()
	}
	if ss.env.From == "" && ss.s.cfg.BounceCheck != nil {
		deliverTo, err := ss.s.cfg.BounceCheck(to)
		if err != nil {
			log.MIDInvalidBounce(mid, icid, to)
			slog.Debug("smtpd: invalid bounce", "component", "smtpd", "mid", mid, "icid", icid, "rcpt", to, "reason", err.Error())
			return invalidBounce(to)
		}
		if deliverTo != "" && deliverTo != to {
			// The hook's answer goes through the same checks as a
			// recipient from the wire.
			if rj := checkAddress(deliverTo, ss.env.SMTPUTF8, false); rj != nil {
				log.MIDRcptRejected(mid, icid, to, rj.reason)
				return rj.err()
			}
			to = deliverTo
		}
	}
	r := envelope.Recipient{Addr: lowerDomain(to)}
	if len(opts.Notify) > 0 {
		r.Notify.Set = true
		for _, n := range opts.Notify {
			switch n {
			case smtp.DSNNotifyNever:
				r.Notify.Never = true
			case smtp.DSNNotifySuccess:
				r.Notify.Success = true
			case smtp.DSNNotifyFailure:
				r.Notify.Failure = true
			case smtp.DSNNotifyDelayed:
				r.Notify.Delay = true
			}
		}
	}
	if opts.OriginalRecipient != "" {
		switch opts.OriginalRecipientType {
		case smtp.DSNAddressTypeUTF8:
			r.ORCPT = "utf-8;" + utf8AddrXtext(opts.OriginalRecipient)
		default:
			r.ORCPT = "rfc822;" + xtext(opts.OriginalRecipient)
		}
	}
	ss.env.Recipients = append(ss.env.Recipients, r)
	log.MIDTo(mid, icid, len(ss.env.Recipients)-1, r.Addr)
	return nil
}

// invalidBounce is the reply to a bounce recipient refused by BounceCheck.
// rcpt passed checkAddress, so it holds no CR, LF or '>'.
func invalidBounce(rcpt string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: 553, EnhancedCode: smtp.EnhancedCode{5, 7, 1}, Message: "invalid bounce, rcpt address <" + rcpt + "> rejected by bounce verification"}
}

// lowerDomain lower-cases the domain of a checked address (RFC 5321 §2.4),
// keeping the local part byte for byte.
func lowerDomain(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	d := strings.ToLower(addr[i+1:])
	if len(d) != len(addr)-i-1 || checkDomain(d) != "" {
		// Some letters change length when lower-cased (U+023A Ⱥ becomes
		// the 3-octet U+2C65): the result could break the length limits
		// checkAddress enforced. Lower-case ASCII letters only.
		d = strings.Map(func(r rune) rune {
			if r >= 'A' && r <= 'Z' {
				return r + 'a' - 'A'
			}
			return r
		}, addr[i+1:])
	}
	return addr[:i+1] + d
}

// Data streams the content to the Receiver and decides the reply. The 250
// go-smtp sends when Data returns nil therefore follows Accept's fsync.
func (ss *session) Data(r io.Reader) error {
	ss.mu.Lock()
	mid, env := ss.mid, ss.env
	ss.mid, ss.env = 0, nil // the transaction is now Data's to finish
	ss.mu.Unlock()
	if env == nil {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Need RCPT command"}
	}
	cfg := &ss.s.cfg
	g := &guard{r: r, onHdr: func(id, subj string, haveID, haveSubj bool) {
		if haveID {
			cfg.Log.MIDMessageID(mid, id)
		}
		if haveSubj {
			cfg.Log.MIDSubject(mid, subj)
		}
	}}
	size, err := cfg.Receiver.Accept(ss.cc.ctx, mid, env, g)
	if err == nil && g.err == nil && !g.eof {
		// The Receiver returned without reading to the end: it cannot have
		// stored the whole message.
		var one [1]byte
		if n, rerr := g.Read(one[:]); n != 0 || rerr != io.EOF {
			err = errors.New("receiver did not read the whole message")
		}
	}
	if rep := dataReply(g.err, err); rep != nil {
		cfg.Log.ICIDReceivingFailed(ss.cc.icid, strconv.Itoa(rep.Code)+" "+rep.Message)
		cfg.Log.MIDAborted(mid, "receiving failed")
		return rep
	}
	cfg.Log.MIDReady(mid, size, env.From)
	cfg.Log.MIDQueued(mid)
	if cfg.OnQueued != nil {
		cfg.OnQueued(mid)
	}
	return nil
}

// dataReply maps the outcome of a DATA transfer to the reply, or nil for
// 250. What the guard saw wins over what the Receiver said, so a Receiver
// that ignored a failed read still cannot produce a 250.
func dataReply(readErr, acceptErr error) *smtp.SMTPError {
	switch {
	case readErr == nil:
	case errors.Is(readErr, errBareLF), errors.Is(readErr, errBareCR):
		return errBareLine
	case errors.Is(readErr, smtp.ErrDataTooLarge):
		return errTooBig
	case errors.Is(readErr, smtp.ErrTooLongLine):
		return errLongLine
	default:
		return errLocal
	}
	if acceptErr == nil {
		return nil
	}
	var rep *reply.Reply
	if errors.As(acceptErr, &rep) && rep.Code >= 400 && rep.Code < 600 {
		return toSMTPError(rep)
	}
	var se *smtp.SMTPError
	if errors.As(acceptErr, &se) && se.Code >= 400 && se.Code < 600 {
		return se
	}
	return errLocal
}

func toSMTPError(r *reply.Reply) *smtp.SMTPError {
	e := &smtp.SMTPError{Code: r.Code, Message: r.Text}
	if parts := strings.Split(r.Enhanced, "."); len(parts) == 3 {
		for i, p := range parts {
			n, err := strconv.Atoi(p)
			if err != nil {
				return e
			}
			e.EnhancedCode[i] = n
		}
		if e.EnhancedCode[0] != r.Code/100 {
			e.EnhancedCode = smtp.EnhancedCodeNotSet
		}
	}
	if e.Message == "" {
		e.Message = "Message not accepted"
	}
	return e
}

// Reset ends the transaction (RSET, a new EHLO, or after DATA).
func (ss *session) Reset() {
	ss.abort("receiving aborted by sender")
}

// Logout ends the session (connection closed, or STARTTLS).
func (ss *session) Logout() error {
	ss.abort("receiving aborted: connection closed")
	return nil
}

func (ss *session) abort(reason string) {
	ss.mu.Lock()
	mid, open := ss.mid, ss.env != nil
	ss.mid, ss.env = 0, nil
	ss.mu.Unlock()
	if open {
		ss.s.cfg.Log.MIDAborted(mid, reason)
	}
}
