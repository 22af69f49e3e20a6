package deliver

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"
	"time"

	"outpost/internal/envelope"
	"outpost/internal/reply"
)

// Reply parsing limits. RFC 5321 §4.5.3.1.5 limits a reply line to 512
// octets; we accept more from lax servers but bound memory.
const (
	maxLine       = 4096
	maxReplyLines = 256
)

// errProtocol marks a malformed reply.
var errProtocol = errors.New("malformed SMTP reply")

// Conn is one open delivery connection. It is not safe for concurrent use.
type Conn struct {
	c        *Client
	dcid     uint64
	host     string
	addr     netip.AddrPort
	nc       net.Conn
	r        *bufio.Reader
	w        *bufio.Writer
	wt       time.Duration // current write timeout, read by timedWriter
	ext      map[string]string
	tls      *tls.ConnectionState
	verified bool
	broken   bool
	closed   bool
}

// DCID is the delivery connection id used in the mail log.
func (cn *Conn) DCID() uint64 { return cn.dcid }

// Host is the destination host name.
func (cn *Conn) Host() string { return cn.host }

// RemoteAddr is the peer address and port.
func (cn *Conn) RemoteAddr() netip.AddrPort { return cn.addr }

// TLSState returns the TLS state, and false for a plaintext connection.
func (cn *Conn) TLSState() (tls.ConnectionState, bool) {
	if cn.tls == nil {
		return tls.ConnectionState{}, false
	}
	return *cn.tls, true
}

// Verified reports whether the peer certificate passed verification (only
// checked under verifying modes).
func (cn *Conn) Verified() bool { return cn.verified }

// Extension returns the parameters of an EHLO keyword (upper case) and
// whether the server offered it.
func (cn *Conn) Extension(name string) (string, bool) {
	v, ok := cn.ext[strings.ToUpper(name)]
	return v, ok
}

// Usable reports whether another transaction may be sent.
func (cn *Conn) Usable() bool { return !cn.broken && !cn.closed }

// Alive reports whether an idle connection can carry another transaction:
// it is usable and the server has neither closed it nor sent anything
// unasked (a 421 on idle timeout, say). A connection found dead is marked
// broken. Call it before reusing a pooled connection; it does not wait
// unless the server did send something.
func (cn *Conn) Alive() bool {
	if !cn.Usable() {
		return false
	}
	if cn.r.Buffered() > 0 {
		cn.markBroken()
		return false
	}
	switch peekSocket(cn.nc) {
	case sockIdle:
		return true
	case sockClosed:
		cn.markBroken()
		return false
	}
	// Bytes are waiting. Over TLS they may be a session ticket the server
	// sent after the handshake, which is not a reply: read through the TLS
	// layer briefly. A timeout means only such records were there (TLS
	// treats a timeout as temporary, so the connection stays usable); SMTP
	// data or EOF means the server is done with this connection.
	cn.nc.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err := cn.r.Peek(1)
	cn.nc.SetReadDeadline(time.Time{})
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	cn.markBroken()
	return false
}

type sockState int

const (
	sockIdle   sockState = iota // nothing to read, still open
	sockData                    // bytes waiting
	sockClosed                  // EOF or an error
)

// peekSocket looks at the TCP socket under nc without blocking and without
// consuming anything (recv with MSG_PEEK|MSG_DONTWAIT). A read deadline in
// the past cannot do this: Go then fails the read before trying it.
func peekSocket(nc net.Conn) sockState {
	raw := nc
	if tc, ok := nc.(*tls.Conn); ok {
		raw = tc.NetConn()
	}
	sc, ok := raw.(syscall.Conn)
	if !ok {
		return sockData // cannot tell: let the caller read
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return sockClosed
	}
	var b [1]byte
	var n int
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		n, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true
	}); err != nil {
		return sockClosed
	}
	switch {
	case rerr == syscall.EAGAIN:
		return sockIdle
	case rerr != nil, n == 0:
		return sockClosed
	}
	return sockData
}

// readReply reads one possibly multi-line reply (RFC 5321 §4.2.1) within
// timeout. lines are the texts after "ddd-"/"ddd ".
func (cn *Conn) readReply(timeout time.Duration) (*reply.Reply, []string, error) {
	if err := cn.w.Flush(); err != nil {
		return nil, nil, fmt.Errorf("write: %w", err)
	}
	cn.nc.SetReadDeadline(time.Now().Add(timeout))
	var lines []string
	code := 0
	for {
		b, err := cn.r.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return nil, nil, fmt.Errorf("%w: line longer than %d bytes", errProtocol, maxLine)
			}
			return nil, nil, fmt.Errorf("read reply: %w", err)
		}
		s := strings.TrimRight(string(b), "\r\n")
		c, more, text, ok := parseLine(s)
		if !ok {
			return nil, nil, fmt.Errorf("%w: %q", errProtocol, truncate(s, 80))
		}
		if code != 0 && c != code {
			return nil, nil, fmt.Errorf("%w: code changed from %d to %d within a reply", errProtocol, code, c)
		}
		code = c
		lines = append(lines, text)
		if len(lines) > maxReplyLines {
			return nil, nil, fmt.Errorf("%w: more than %d lines", errProtocol, maxReplyLines)
		}
		if !more {
			break
		}
	}
	return makeReply(code, lines), lines, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// parseLine splits "250-text", "250 text" or "250".
func parseLine(s string) (code int, more bool, text string, ok bool) {
	if len(s) < 3 || s[0] < '2' || s[0] > '5' || s[1] < '0' || s[1] > '9' || s[2] < '0' || s[2] > '9' {
		return 0, false, "", false
	}
	code, _ = strconv.Atoi(s[:3])
	if len(s) == 3 {
		return code, false, "", true
	}
	switch s[3] {
	case ' ':
		return code, false, s[4:], true
	case '-':
		return code, true, s[4:], true
	}
	return 0, false, "", false
}

// makeReply builds a Reply: the enhanced code (RFC 3463, RFC 2034) is taken
// from the first line when its class matches the basic code, and removed
// from every line that repeats it; lines are joined with "; ".
func makeReply(code int, lines []string) *reply.Reply {
	first := reply.Parse(code, lines[0], true)
	if first.Enhanced != "" && first.Enhanced[0] != byte('0'+code/100) {
		first = &reply.Reply{Code: code, Text: lines[0], Remote: true}
	}
	if len(lines) == 1 {
		return first
	}
	texts := []string{first.Text}
	for _, l := range lines[1:] {
		if first.Enhanced != "" {
			l = strings.TrimPrefix(strings.TrimPrefix(l, first.Enhanced), " ")
		}
		texts = append(texts, l)
	}
	first.Text = strings.Join(texts, "; ")
	return first
}

// cmd sends one command and reads its reply.
func (cn *Conn) cmd(timeout time.Duration, format string, args ...any) (*reply.Reply, []string, error) {
	cn.wt = timeout
	fmt.Fprintf(cn.w, format+"\r\n", args...)
	return cn.readReply(timeout)
}

// hello sends EHLO, falling back to HELO when EHLO is refused with 5xx
// (RFC 5321 §3.2), and records the extensions. On failure the reply is
// the server's, or a local 4.4.x one.
func (cn *Conn) hello() (*reply.Reply, error) {
	t := cn.c.t.EHLO
	rep, lines, err := cn.cmd(t, "EHLO %s", cn.c.o.Hostname)
	if err != nil {
		cn.broken = true
		return ioReply(err, "sending EHLO"), err
	}
	if rep.Code == 250 {
		cn.ext = map[string]string{}
		for _, l := range lines[1:] {
			kw, params, _ := strings.Cut(l, " ")
			cn.ext[strings.ToUpper(kw)] = params
		}
		return rep, nil
	}
	if rep.Code >= 500 && rep.Code != 554 {
		rep, _, err = cn.cmd(t, "HELO %s", cn.c.o.Hostname)
		if err != nil {
			cn.broken = true
			return ioReply(err, "sending HELO"), err
		}
		if rep.Code == 250 {
			cn.ext = map[string]string{}
			return rep, nil
		}
	}
	return rep, fmt.Errorf("EHLO refused: %s", rep)
}

// Rcpt is one recipient of a Message.
type Rcpt struct {
	RID    int // recipient index in the message, for logs
	Addr   string
	Notify envelope.Notify
	ORCPT  string // RFC 3461 "addr-type;xtext", sent as is
}

// Message is one transaction's worth of work.
type Message struct {
	MID   uint64
	From  string // "" for the null reverse path
	Rcpts []Rcpt
	// RET ("FULL"/"HDRS") and EnvID (xtext) are RFC 3461 parameters, sent
	// when the server offers DSN.
	RET, EnvID string
	SMTPUTF8   bool  // the envelope or headers need SMTPUTF8 (RFC 6531)
	EightBit   bool  // BODY=8BITMIME content (RFC 6152)
	Size       int64 // body size in bytes, for SIZE= (RFC 1870); 0 = unknown
	// Body opens the content: CRLF line endings, not dot-stuffed (the
	// client does the stuffing, RFC 5321 §4.5.2). It is called after at
	// least one recipient was accepted and before DATA, and once more
	// beforehand only to read the header section of a message flagged
	// SMTPUTF8 going to a server that does not offer it.
	Body func() (io.ReadCloser, error)
}

// Result is the outcome of one transaction.
type Result struct {
	// Rcpt is aligned with Message.Rcpts: the RCPT reply for refused
	// recipients, the final DATA reply (or the failure that stopped the
	// transaction) for the others. Never nil entries.
	Rcpt []*reply.Reply
	// Data is the reply to the end of data (or to DATA when it was
	// refused); nil when DATA was not reached.
	Data *reply.Reply
	// Broken means the connection must not be reused; it has been closed
	// at the socket level (call Close to log it).
	Broken bool
}

// Send runs one mail transaction: MAIL, RCPT for each recipient (batched
// with PIPELINING when offered, RFC 2920), DATA and the body. It never
// returns a nil Result.
func (cn *Conn) Send(ctx context.Context, m *Message) *Result {
	res := &Result{Rcpt: make([]*reply.Reply, len(m.Rcpts))}
	fill := func(r *reply.Reply, only []int) {
		if only == nil {
			for i := range res.Rcpt {
				if res.Rcpt[i] == nil {
					res.Rcpt[i] = r
				}
			}
			return
		}
		for _, i := range only {
			res.Rcpt[i] = r
		}
	}
	if !cn.Usable() {
		fill(reply.New(0, "4.4.2", "connection is not usable"), nil)
		res.Broken = true
		return res
	}
	if len(m.Rcpts) == 0 {
		return res
	}
	// RFC 6531 §3.4: a message that needs SMTPUTF8 must not be sent to a
	// server that does not offer it; the failure is permanent. A client
	// may have asked for SMTPUTF8 for an all-ASCII message (many do
	// whenever it is offered): that message needs nothing, and goes as is.
	if _, ok := cn.ext["SMTPUTF8"]; m.SMTPUTF8 && !ok {
		if needsUTF8(m) {
			fill(reply.New(554, "5.6.7", "SMTPUTF8 is required, but was not offered by host %s", cn.host), nil)
			return res
		}
		mm := *m
		mm.SMTPUTF8 = false
		m = &mm
	}
	// RFC 1870 §6: do not send a message larger than the server's SIZE.
	if max := cn.sizeLimit(); max > 0 && m.Size > max {
		fill(reply.New(552, "5.3.4", "message size %d exceeds size limit %d of host %s", m.Size, max, cn.host), nil)
		return res
	}

	stop := context.AfterFunc(ctx, func() { cn.nc.Close() })
	defer stop()
	t := cn.c.t
	log := cn.c.o.Log
	rids := make([]int, len(m.Rcpts))
	for i, r := range m.Rcpts {
		rids[i] = r.RID
	}
	log.DeliveryStart(cn.dcid, m.MID, rids)

	// ioFail marks the connection broken and gives every recipient without
	// a reply yet (or the accepted ones) a temporary failure.
	ioFail := func(err error, doing string, only []int) *Result {
		r := ioReply(err, doing)
		if ctx.Err() != nil {
			r = reply.New(0, "4.4.2", "delivery cancelled while %s: %v", doing, ctx.Err())
		}
		cn.markBroken()
		fill(r, only)
		res.Broken = true
		return res
	}
	check421 := func(r *reply.Reply) {
		if r.Code == 421 { // RFC 5321 §3.8: the server is closing the channel
			cn.markBroken()
			res.Broken = true
		}
	}

	_, pipelining := cn.ext["PIPELINING"]
	cn.wt = t.Mail
	cn.w.WriteString(cn.mailCommand(m) + "\r\n")
	var mailRep *reply.Reply
	if !pipelining {
		rep, _, err := cn.readReply(t.Mail)
		if err != nil {
			return ioFail(err, "sending MAIL FROM", nil)
		}
		mailRep = rep
		if !rep.Success() {
			check421(rep)
			fill(rep, nil)
			cn.rset()
			return res
		}
	}
	for _, r := range m.Rcpts {
		cn.w.WriteString(cn.rcptCommand(r) + "\r\n")
		if !pipelining {
			break // sent one at a time below
		}
	}
	var accepted []int
	if pipelining {
		// One flush for MAIL and every RCPT (RFC 2920 §3.1), then the
		// replies in order.
		rep, _, err := cn.readReply(t.Mail)
		if err != nil {
			return ioFail(err, "sending MAIL FROM", nil)
		}
		mailRep = rep
		for i := range m.Rcpts {
			rrep, _, err := cn.readReply(t.Rcpt)
			if err != nil {
				return ioFail(err, "sending RCPT TO", nil)
			}
			if !mailRep.Success() {
				continue // replies to RCPT after a refused MAIL mean nothing
			}
			if rrep.Success() {
				accepted = append(accepted, i) // reply comes from DATA
			} else {
				res.Rcpt[i] = rrep
			}
			check421(rrep)
		}
		if !mailRep.Success() {
			check421(mailRep)
			fill(mailRep, nil)
			cn.rset()
			return res
		}
	} else {
		for i := range m.Rcpts {
			if i > 0 {
				cn.w.WriteString(cn.rcptCommand(m.Rcpts[i]) + "\r\n")
			}
			rrep, _, err := cn.readReply(t.Rcpt)
			if err != nil {
				return ioFail(err, "sending RCPT TO", nil)
			}
			if rrep.Success() {
				accepted = append(accepted, i) // reply comes from DATA
			} else {
				res.Rcpt[i] = rrep
			}
			if rrep.Code == 421 {
				check421(rrep)
				fill(rrep, nil)
				return res
			}
		}
	}
	if res.Broken {
		fill(reply.New(421, "4.4.2", "server closed the connection"), nil)
		return res
	}
	if len(accepted) == 0 {
		cn.rset()
		return res
	}

	body, err := m.Body()
	if err != nil {
		cn.rset()
		fill(reply.New(0, "4.3.0", "cannot read message %d: %v", m.MID, err), accepted)
		return res
	}
	defer body.Close()

	rep, _, err := cn.cmd(t.DataInit, "DATA")
	if err != nil {
		return ioFail(err, "sending DATA", accepted)
	}
	if rep.Code != 354 {
		res.Data = rep
		fill(rep, accepted)
		check421(rep)
		cn.rset()
		return res
	}
	cn.wt = t.DataBlock
	dw := &dotWriter{w: cn.w}
	if _, err := io.CopyBuffer(dw, body, make([]byte, 32<<10)); err != nil {
		// Either the spool or the socket failed mid-DATA: the transaction
		// cannot be aborted cleanly, so the connection is dropped.
		return ioFail(fmt.Errorf("stream message %d: %w", m.MID, err), "sending message data", accepted)
	}
	if err := dw.finish(); err != nil {
		return ioFail(err, "sending message data", accepted)
	}
	rep, _, err = cn.readReply(t.DataEnd)
	if err != nil {
		return ioFail(err, "waiting for the reply to end of data", accepted)
	}
	res.Data = rep
	fill(rep, accepted)
	check421(rep)
	if rep.Success() {
		acc := make([]int, len(accepted))
		for j, i := range accepted {
			acc[j] = m.Rcpts[i].RID
		}
		log.MessageDone(cn.dcid, m.MID, acc)
		log.Response(m.MID, acc, strings.TrimSpace(rep.Enhanced+" "+rep.Text))
	}
	return res
}

func (cn *Conn) sizeLimit() int64 {
	v, ok := cn.ext["SIZE"]
	if !ok {
		return 0
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}

// mailCommand builds MAIL FROM with the ESMTP parameters the server
// offers (RFC 1870 SIZE, RFC 6152 BODY, RFC 6531 SMTPUTF8, RFC 3461 RET
// and ENVID).
func (cn *Conn) mailCommand(m *Message) string {
	var b strings.Builder
	b.WriteString("MAIL FROM:<" + m.From + ">")
	if _, ok := cn.ext["SIZE"]; ok && m.Size > 0 {
		b.WriteString(" SIZE=" + strconv.FormatInt(m.Size, 10))
	}
	if _, ok := cn.ext["8BITMIME"]; ok && m.EightBit {
		b.WriteString(" BODY=8BITMIME")
	}
	if m.SMTPUTF8 {
		b.WriteString(" SMTPUTF8")
	}
	if _, ok := cn.ext["DSN"]; ok {
		if m.RET != "" {
			b.WriteString(" RET=" + m.RET)
		}
		if m.EnvID != "" {
			b.WriteString(" ENVID=" + m.EnvID)
		}
	}
	return b.String()
}

// rcptCommand builds RCPT TO with RFC 3461 NOTIFY and ORCPT when the
// server offers DSN.
func (cn *Conn) rcptCommand(r Rcpt) string {
	s := "RCPT TO:<" + r.Addr + ">"
	if _, ok := cn.ext["DSN"]; !ok {
		return s
	}
	if n := r.Notify; n.Set {
		var kw []string
		if n.Never {
			kw = []string{"NEVER"}
		} else {
			if n.Success {
				kw = append(kw, "SUCCESS")
			}
			if n.Failure {
				kw = append(kw, "FAILURE")
			}
			if n.Delay {
				kw = append(kw, "DELAY")
			}
		}
		if len(kw) > 0 {
			s += " NOTIFY=" + strings.Join(kw, ",")
		}
	}
	if r.ORCPT != "" {
		s += " ORCPT=" + r.ORCPT
	}
	return s
}

// rset ends a failed transaction; a failure marks the connection broken.
func (cn *Conn) rset() {
	if !cn.Usable() {
		return
	}
	rep, _, err := cn.cmd(cn.c.t.Mail, "RSET")
	if err != nil || rep.Code != 250 {
		cn.markBroken()
	}
}

// Reset sends RSET (RFC 5321 §4.1.1.5) to start a clean transaction.
func (cn *Conn) Reset(ctx context.Context) error {
	if !cn.Usable() {
		return fmt.Errorf("reset DCID %d: connection is not usable", cn.dcid)
	}
	stop := context.AfterFunc(ctx, func() { cn.nc.Close() })
	defer stop()
	rep, _, err := cn.cmd(cn.c.t.Mail, "RSET")
	if err != nil {
		cn.markBroken()
		return fmt.Errorf("reset DCID %d: %w", cn.dcid, err)
	}
	if rep.Code != 250 {
		cn.markBroken()
		return fmt.Errorf("reset DCID %d: %w", cn.dcid, rep)
	}
	return nil
}

func (cn *Conn) markBroken() {
	cn.broken = true
	cn.nc.Close()
}

// Close sends QUIT (unless the connection is broken), closes the socket
// and logs `DCID d close`. It is idempotent.
func (cn *Conn) Close() error {
	if cn.closed {
		return nil
	}
	cn.closed = true
	if !cn.broken && cn.w != nil {
		if cn.r == nil { // between STARTTLS and a handshake: no QUIT
			cn.broken = true
		} else {
			cn.cmd(cn.c.t.Quit, "QUIT") // RFC 5321 §4.1.1.10; the reply does not matter
		}
	}
	err := cn.nc.Close()
	cn.c.o.Log.DCIDClose(cn.dcid)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("close DCID %d: %w", cn.dcid, err)
	}
	return nil
}

// dotWriter dot-stuffs a CRLF body (RFC 5321 §4.5.2: a line starting with
// "." gets one more) and ends it with CRLF "." CRLF.
type dotWriter struct {
	w       *bufio.Writer
	midLine bool // the last byte written was not '\n'
}

func (d *dotWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if !d.midLine && p[0] == '.' {
			if err := d.w.WriteByte('.'); err != nil {
				return n, err
			}
		}
		i := bytes.IndexByte(p, '\n')
		chunk := p
		if i >= 0 {
			chunk = p[:i+1]
		}
		m, err := d.w.Write(chunk)
		n += m
		if err != nil {
			return n, err
		}
		d.midLine = chunk[len(chunk)-1] != '\n'
		p = p[len(chunk):]
	}
	return n, nil
}

func (d *dotWriter) finish() error {
	if d.midLine {
		d.w.WriteString("\r\n")
	}
	d.w.WriteString(".\r\n")
	return d.w.Flush()
}

// needsUTF8 reports whether a message flagged SMTPUTF8 really needs it:
// a non-ASCII address in the envelope, or non-ASCII bytes in its header
// section (RFC 6532). A header that cannot be read counts as needing it.
func needsUTF8(m *Message) bool {
	ascii := func(s string) bool {
		for i := 0; i < len(s); i++ {
			if s[i] >= 0x80 {
				return false
			}
		}
		return true
	}
	if !ascii(m.From) {
		return true
	}
	for _, r := range m.Rcpts {
		if !ascii(r.Addr) {
			return true
		}
	}
	if m.Body == nil {
		return true
	}
	rc, err := m.Body()
	if err != nil {
		return true
	}
	defer rc.Close()
	br := bufio.NewReaderSize(io.LimitReader(rc, 1<<20), 4096)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) == 0 || (len(line) <= 2 && strings.TrimRight(string(line), "\r\n") == "") {
			return err != nil && err != io.EOF && err != bufio.ErrBufferFull
		}
		if !ascii(string(line)) {
			return true
		}
		if err != nil && err != bufio.ErrBufferFull {
			return false
		}
	}
}
