package smtpd

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"strings"
)

// Errors the content guard reports to the Receiver's reads.
var (
	errBareLF = errors.New("bare LF in message data")
	errBareCR = errors.New("bare CR in message data")
)

// Header-section bounds: the scanner looks at no more than this much of the
// content, and keeps no more than maxField octets of one field.
const (
	maxHeaderSection = 64 << 10
	maxField         = 1000
)

// guard is the reader the Receiver gets. It passes go-smtp's dot-unstuffed
// DATA stream through unchanged while
//   - failing the read, stickily, at the first bare CR or bare LF
//     (RFC 5321 §2.3.8: lines end with CRLF, and bare CR or LF MUST NOT be
//     sent; accepting them is what makes SMTP smuggling possible);
//   - recording the first error of the underlying reader (size limit, line
//     limit, lost client), so the reply is ours whatever the Receiver says;
//   - scanning the header section, bounded, for Message-ID and Subject.
type guard struct {
	r      io.Reader
	prevCR bool
	err    error // sticky: first error other than io.EOF
	eof    bool
	n      int64
	hdr    headerScan
	onHdr  func(msgID, subject string, haveID, haveSubj bool)
}

func (g *guard) Read(p []byte) (int, error) {
	if g.err != nil {
		return 0, g.err
	}
	if g.eof {
		return 0, io.EOF
	}
	n, err := g.r.Read(p)
	for i := 0; i < n; i++ {
		c := p[i]
		if g.prevCR && c != '\n' {
			g.err = errBareCR
		} else if c == '\n' && !g.prevCR {
			g.err = errBareLF
		}
		if g.err != nil {
			g.n += int64(i)
			return i, g.err
		}
		g.prevCR = c == '\r'
	}
	if !g.hdr.done {
		g.hdr.feed(p[:n])
		if g.hdr.done {
			g.headers()
		}
	}
	g.n += int64(n)
	if err == io.EOF {
		if g.prevCR {
			g.err = errBareCR
			return n, g.err
		}
		g.eof = true
		if !g.hdr.done {
			g.hdr.finish()
			g.headers()
		}
		return n, io.EOF
	}
	if err != nil {
		g.err = err
	}
	return n, err
}

func (g *guard) headers() {
	if g.onHdr != nil {
		h := &g.hdr
		g.onHdr(h.msgID, h.subject, h.haveID, h.haveSubj)
		g.onHdr = nil
	}
}

// headerScan finds Message-ID and Subject in the header section
// (RFC 5322 §2.2), unfolding continuation lines (§2.2.3).
type headerScan struct {
	done     bool
	seen     int
	line     []byte
	field    string // lower-cased name of the field being collected, or ""
	value    []byte
	msgID    string
	subject  string
	haveID   bool
	haveSubj bool
}

func (h *headerScan) feed(p []byte) {
	for len(p) > 0 && !h.done {
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i+1]
		}
		p = p[len(chunk):]
		h.seen += len(chunk)
		if room := maxField + 2 - len(h.line); room > 0 {
			h.line = append(h.line, chunk[:min(room, len(chunk))]...)
		}
		if i >= 0 {
			l := bytes.TrimRight(h.line, "\r\n")
			h.line = h.line[:0]
			h.endLine(l)
		}
		if h.seen >= maxHeaderSection {
			h.finish()
		}
	}
}

func (h *headerScan) endLine(l []byte) {
	if len(l) == 0 {
		h.finish()
		return
	}
	if l[0] == ' ' || l[0] == '\t' {
		if h.field != "" && len(h.value) < maxField {
			h.value = append(h.value, l...)
		}
		return
	}
	h.endField()
	name, val, ok := bytes.Cut(l, []byte{':'})
	if !ok {
		return
	}
	switch f := strings.ToLower(string(bytes.TrimSpace(name))); {
	case f == "message-id" && !h.haveID, f == "subject" && !h.haveSubj:
		h.field = f
		h.value = append(h.value[:0], val...)
	}
}

func (h *headerScan) endField() {
	v := strings.TrimSpace(string(h.value))
	if len(v) > maxField {
		v = v[:maxField]
	}
	switch h.field {
	case "message-id":
		h.msgID, h.haveID = v, true
	case "subject":
		if d, err := new(mime.WordDecoder).DecodeHeader(v); err == nil {
			v = d
		}
		h.subject, h.haveSubj = v, true
	}
	h.field, h.value = "", h.value[:0]
}

func (h *headerScan) finish() {
	if h.done {
		return
	}
	h.done = true
	if l := bytes.TrimRight(h.line, "\r\n"); len(l) > 0 {
		h.endLine(l)
	}
	h.line = nil
	h.endField()
}

// xtext encodes s as RFC 3461 §4 xtext: printable ASCII except '+' and '='
// as itself, every other octet as "+HH".
func xtext(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= '!' && c <= '~' && c != '+' && c != '=' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('+')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}

// utf8AddrXtext encodes s as RFC 6533 §3 utf-8-addr-xtext: non-ASCII and
// xtext specials as \x{HEX}.
func utf8AddrXtext(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= '!' && r <= '~' && r != '+' && r != '=' && r != '\\' {
			b.WriteRune(r)
			continue
		}
		b.WriteString(`\x{`)
		b.WriteString(hexRune(r))
		b.WriteByte('}')
	}
	return b.String()
}

func hexRune(r rune) string {
	const hex = "0123456789ABCDEF"
	var buf [8]byte
	for i := 7; i >= 0; i-- {
		buf[i] = hex[r&0xf]
		r >>= 4
	}
	s := strings.TrimLeft(string(buf[:]), "0")
	if len(s) < 2 {
		s = strings.Repeat("0", 2-len(s)) + s
	}
	return s
}
