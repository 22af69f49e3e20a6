// Package maillog writes the mail log: one line per mail event in the
// classic Secure Email Gateway text format, so that existing log parsers
// (Splunk add-ons, Cribl packs, grok patterns) keep working.
//
//	<ctime> <Level>: <text>
//
// where ctime is "Mon Jan  2 15:04:05 2006" in local time. Every event has one
// typed method; the exact shapes are the product's API and are documented in
// docs/mail_logs.md. Tests compare whole lines.
//
// Lines go to <dir>/mail.current through a buffer that is flushed at least
// every FlushInterval and on Close, and the file rolls over by size and age
// into mail.@<timestamp>.s files, keeping the newest Keep of them. A write
// error never blocks mail flow: it is reported once through slog and the
// line is dropped.
package maillog

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"log/syslog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

// Level is a mail-log severity; a logger writes lines at or above its level.
type Level int

// The levels, most severe first. Info is the zero value, so that a zero
// Options logs at Info like every other zero-means-default option.
const (
	Critical Level = iota - 2
	Warning
	Info
	Debug
	Trace
)

var levelNames = [...]string{"Critical", "Warning", "Info", "Debug", "Trace"}

// String returns the level's name as it appears in a line ("Info"); an
// unknown level reads as Info.
func (l Level) String() string {
	i := int(l - Critical)
	if i < 0 || i >= len(levelNames) {
		return "Info"
	}
	return levelNames[i]
}

// ParseLevel reads "critical", "warning", "info", "debug" or "trace".
func ParseLevel(s string) (Level, error) {
	for i, n := range levelNames {
		if lv := Critical + Level(i); strings.EqualFold(s, n) || (lv == Info && strings.EqualFold(s, "information")) {
			return lv, nil
		}
	}
	return Info, fmt.Errorf("unknown mail log level %q (want critical, warning, info, debug or trace)", s)
}

// Options configure a Logger.
type Options struct {
	Level         Level         // lines above this severity are dropped; zero = Info
	MaxSize       int64         // roll over when mail.current exceeds this; 0 = 10 MiB
	MaxAge        time.Duration // roll over when mail.current is older; 0 = 24h
	Keep          int           // rolled-over files kept; 0 = 10
	FlushInterval time.Duration // 0 = 100ms
	Syslog        bool          // also send each line to the local syslog as "mail_logs"
	Now           func() time.Time
}

// Logger writes mail-log lines. It is safe for concurrent use. A nil
// *Logger discards everything, which keeps call sites free of checks.
type Logger struct {
	mu      sync.Mutex
	opts    Options
	dir     string
	f       *os.File
	out     io.Writer // what w writes to: f, or the NewWriter target
	w       *bufio.Writer
	size    int64
	opened  time.Time
	sys     *syslog.Writer
	subs    map[chan string]struct{}
	warned  bool
	closed  bool
	done    chan struct{}
	stopped chan struct{}
}

// CurrentName is the name of the file being written.
const CurrentName = "mail.current"

// Open starts a logger writing into dir (created if missing).
func Open(dir string, opts Options) (*Logger, error) {
	if opts.MaxSize <= 0 {
		opts.MaxSize = 10 << 20
	}
	if opts.MaxAge <= 0 {
		opts.MaxAge = 24 * time.Hour
	}
	if opts.Keep <= 0 {
		opts.Keep = 10
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = 100 * time.Millisecond
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("mail log directory: %w", err)
	}
	l := &Logger{opts: opts, dir: dir, subs: map[chan string]struct{}{}, done: make(chan struct{}), stopped: make(chan struct{})}
	if err := l.openCurrent(); err != nil {
		return nil, err
	}
	if opts.Syslog {
		if s, err := syslog.New(syslog.LOG_MAIL|syslog.LOG_INFO, "mail_logs"); err == nil {
			l.sys = s
		} else {
			slog.Warn("mail log: syslog unavailable", "err", err)
		}
	}
	go l.flusher()
	return l, nil
}

// NewWriter makes a logger that writes to w with no file handling (for
// commands that print mail-log lines, and tests). Each line reaches w before
// the logging call returns.
func NewWriter(w io.Writer, level Level) *Logger {
	l := &Logger{opts: Options{Level: level, Now: time.Now}, out: w, w: bufio.NewWriter(w), subs: map[chan string]struct{}{}}
	return l
}

func (l *Logger) openCurrent() error {
	p := filepath.Join(l.dir, CurrentName)
	f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("open mail log: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("stat mail log: %w", err)
	}
	l.f, l.out, l.w, l.size, l.opened = f, f, bufio.NewWriterSize(f, 64<<10), st.Size(), l.opts.Now()
	return nil
}

func (l *Logger) flusher() {
	defer close(l.stopped)
	t := time.NewTicker(l.opts.FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-l.done:
			return
		case <-t.C:
			l.mu.Lock()
			l.flushLocked()
			if l.size > 0 && l.opts.Now().Sub(l.opened) >= l.opts.MaxAge {
				l.rolloverLocked()
			}
			l.mu.Unlock()
		}
	}
}

func (l *Logger) flushLocked() {
	if l.w == nil {
		return
	}
	if err := l.w.Flush(); err != nil {
		if !l.warned {
			l.warned = true
			slog.Error("mail log write failed", "err", err)
		}
		// A bufio.Writer keeps its first error forever: drop the buffered
		// lines and start afresh, so that the log resumes once the cause
		// (a full disk, say) goes away.
		l.w.Reset(l.out)
		return
	}
	l.warned = false // report the next failure too
}

// Rollover closes mail.current, renames it to mail.@<timestamp>.s and starts
// a new one, as the appliance's rollovernow does.
func (l *Logger) Rollover() {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.rolloverLocked()
}

func (l *Logger) rolloverLocked() {
	if l.f == nil {
		return
	}
	l.flushLocked()
	l.f.Close()
	cur := filepath.Join(l.dir, CurrentName)
	if err := os.Rename(cur, l.rolledNameLocked()); err != nil {
		slog.Error("mail log rollover", "err", err)
	}
	if err := l.openCurrent(); err != nil {
		slog.Error("mail log rollover", "err", err)
		l.f, l.w = nil, nil
		return
	}
	l.pruneLocked()
}

// rolledNameLocked names the next rolled-over file after the current time,
// moving a microsecond later while that name is taken, so that two rollovers
// within one clock tick never overwrite each other and the names still sort
// in rollover order.
func (l *Logger) rolledNameLocked() string {
	t := l.opts.Now().UTC()
	for {
		p := filepath.Join(l.dir, "mail.@"+t.Format("20060102T150405.000000")+".s")
		if _, err := os.Lstat(p); os.IsNotExist(err) {
			return p
		}
		t = t.Add(time.Microsecond)
	}
}

func (l *Logger) pruneLocked() {
	old, _ := filepath.Glob(filepath.Join(l.dir, "mail.@*.s"))
	sort.Strings(old)
	for len(old) > l.opts.Keep {
		os.Remove(old[0])
		old = old[1:]
	}
}

// Close flushes and closes the log. Lines logged after Close are dropped;
// closing twice is harmless.
func (l *Logger) Close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	first := !l.closed
	l.closed = true
	l.mu.Unlock()
	if !first {
		return nil
	}
	if l.done != nil {
		close(l.done)
		<-l.stopped
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.flushLocked()
	var err error
	if l.f != nil {
		err = l.f.Close()
		l.f, l.w = nil, nil
	}
	if l.sys != nil {
		l.sys.Close()
		l.sys = nil
	}
	l.w = nil
	return err
}

// Enabled reports whether lines at lv are written.
func (l *Logger) Enabled(lv Level) bool { return l != nil && lv <= l.opts.Level }

// Subscribe returns a channel receiving every written line (with its
// timestamp and level) until cancel is called; slow readers miss lines
// rather than slow mail flow. A nil Logger returns a nil channel, which
// never delivers.
func (l *Logger) Subscribe() (ch <-chan string, cancel func()) {
	if l == nil {
		return nil, func() {}
	}
	c := make(chan string, 1024)
	l.mu.Lock()
	l.subs[c] = struct{}{}
	l.mu.Unlock()
	return c, func() {
		l.mu.Lock()
		delete(l.subs, c)
		l.mu.Unlock()
	}
}

// Log writes one line at lv. Prefer the typed methods.
func (l *Logger) Log(lv Level, format string, args ...any) {
	if !l.Enabled(lv) {
		return
	}
	text := oneLine(fmt.Sprintf(format, args...))
	line := l.opts.Now().Format("Mon Jan _2 15:04:05 2006") + " " + lv.String() + ": " + text + "\n"
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.w != nil {
		n, _ := l.w.WriteString(line)
		l.size += int64(n)
		if l.f == nil {
			l.flushLocked() // NewWriter: no flusher goroutine
		} else if l.size >= l.opts.MaxSize {
			l.rolloverLocked()
		}
	}
	if l.sys != nil {
		l.sys.Write([]byte(lv.String() + ": " + text))
	}
	for c := range l.subs {
		select {
		case c <- line:
		default:
		}
	}
}

// oneLine keeps the line grammar whatever the arguments hold (a remote
// server's multi-line reply, an address with a control character): CR, LF
// and the other control characters except tab become spaces.
func oneLine(s string) string {
	if !strings.ContainsFunc(s, isControl) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if isControl(r) {
			return ' '
		}
		return r
	}, s)
}

func isControl(r rune) bool { return (r < 0x20 && r != '\t') || r == 0x7f }

// Infof writes an Info line.
func (l *Logger) Infof(format string, args ...any) { l.Log(Info, format, args...) }

// Debugf writes a Debug line.
func (l *Logger) Debugf(format string, args ...any) { l.Log(Debug, format, args...) }

// Warnf writes a Warning line.
func (l *Logger) Warnf(format string, args ...any) { l.Log(Warning, format, args...) }
