package webui

import (
	"bufio"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"outpost/internal/mtasts"
)

// ---- Verify MTA-STS domain ----

func (s *Server) check(w http.ResponseWriter, r *http.Request, ss *session) {
	domain := strings.ToLower(strings.TrimSuffix(strings.TrimSpace(r.URL.Query().Get("domain")), "."))
	p := &page{Title: "Verify MTA-STS Domain", Nav: "check"}
	var rep *mtasts.Report
	if domain != "" {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Minute)
		rep = s.b.CheckMTASTS(ctx, domain)
		cancel()
	}
	p.Data = struct {
		Domain string
		Report *mtasts.Report
	}{domain, rep}
	s.render(w, r, ss, http.StatusOK, "check", p)
}

// ---- Monitor: queue by destination and TLS report ----

type queueDest struct {
	Domain      string
	Active      int // recipients being delivered or waiting for a connection
	Delayed     int // recipients deferred, waiting for their retry time
	Connections int
	Oldest      time.Time
	LastError   string
	Messages    []queueMsg
}

type queueMsg struct {
	MID     uint64
	From    string
	Arrived time.Time
	Rcpts   []string
	State   string
	Reply   string
	NextTry time.Time
}

func domainOfAddr(a string) string {
	return strings.ToLower(a[strings.LastIndexByte(a, '@')+1:])
}

func (s *Server) queueByDest() []*queueDest {
	byDom := map[string]*queueDest{}
	get := func(d string) *queueDest {
		q := byDom[d]
		if q == nil {
			q = &queueDest{Domain: d}
			byDom[d] = q
		}
		return q
	}
	for _, m := range s.b.List() {
		msgs := map[string]*queueMsg{}
		for _, rc := range m.Recipients {
			if rc.State != "active" && rc.State != "deferred" {
				continue
			}
			q := get(domainOfAddr(rc.Addr))
			if rc.State == "deferred" {
				q.Delayed++
				if rc.LastReply != "" {
					q.LastError = rc.LastReply
				}
			} else {
				q.Active++
			}
			if q.Oldest.IsZero() || m.Arrived.Before(q.Oldest) {
				q.Oldest = m.Arrived
			}
			qm := msgs[q.Domain]
			if qm == nil {
				qm = &queueMsg{MID: m.MID, From: m.From, Arrived: m.Arrived, State: rc.State}
				msgs[q.Domain] = qm
			}
			qm.Rcpts = append(qm.Rcpts, rc.Addr)
			if rc.State == "deferred" {
				qm.State, qm.Reply, qm.NextTry = "deferred", rc.LastReply, rc.NextTry
			}
		}
		for d, qm := range msgs {
			byDom[d].Messages = append(byDom[d].Messages, *qm)
		}
	}
	for _, di := range s.b.Destinations() {
		if q := byDom[strings.ToLower(di.Domain)]; q != nil {
			q.Connections += di.Active
			if di.LastErr != "" {
				q.LastError = di.LastErr
			}
		}
	}
	out := make([]*queueDest, 0, len(byDom))
	for _, q := range byDom {
		out = append(out, q)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Domain < out[j].Domain })
	return out
}

func (s *Server) monitor(w http.ResponseWriter, r *http.Request, ss *session) {
	s.showMonitor(w, r, ss, http.StatusOK, "")
}

func (s *Server) showMonitor(w http.ResponseWriter, r *http.Request, ss *session, status int, errText string) {
	tls := s.b.TLSReport()
	sort.Slice(tls, func(i, j int) bool { return tls[i].Domain < tls[j].Domain })
	p := &page{Title: "Monitor", Nav: "monitor", Error: errText, Data: struct {
		Queue []*queueDest
		TLS   []TLSStat
	}{s.queueByDest(), tls}}
	s.render(w, r, ss, status, "monitor", p)
}

func (s *Server) flush(w http.ResponseWriter, r *http.Request, ss *session) {
	s.b.Flush()
	redirect(w, r, "/monitor", "flushed")
}

func (s *Server) messageAction(w http.ResponseWriter, r *http.Request, ss *session) {
	mid, err := strconv.ParseUint(r.PostForm.Get("mid"), 10, 64)
	if err != nil {
		http.Error(w, "MID must be a number", http.StatusBadRequest)
		return
	}
	switch r.PostForm.Get("action") {
	case "bounce":
		err = s.b.BounceNow(r.Context(), mid)
		if err == nil {
			redirect(w, r, "/monitor", "bounced")
			return
		}
	case "delete":
		err = s.b.Delete(mid)
		if err == nil {
			redirect(w, r, "/monitor", "removed")
			return
		}
	default:
		http.Error(w, "unknown action", http.StatusBadRequest)
		return
	}
	s.showMonitor(w, r, ss, http.StatusConflict, "MID "+strconv.FormatUint(mid, 10)+": "+err.Error())
}

// ---- mail-log search ----

// maxLogResults bounds a search's answer (the newest lines are kept).
const maxLogResults = 2000

var idRE = regexp.MustCompile(`\b(MID|ICID|DCID) (\d+)\b`)

// searchLogs finds the story of a message in the mail log. The query is a
// MID ("1234" or "MID 1234"), or an address or domain: then the lines that
// contain it, every line of the messages those lines name, and the lines
// of their connections (ICID, DCID) that name no other message — so a
// search for a domain also shows "DCID 7 TLS deferring" for a connection
// to its MX. Files are read oldest first: the rolled mail.@*.s files, then
// mail.current; the newest maxLogResults lines are kept.
func searchLogs(dir, q string) (lines []string, truncated bool, err error) {
	q = strings.TrimSpace(q)
	files, _ := filepath.Glob(filepath.Join(dir, "mail.@*.s"))
	sort.Strings(files)
	files = append(files, filepath.Join(dir, "mail.current"))
	ids := map[string]bool{} // "MID 5", "ICID 2", "DCID 7"
	needle := ""
	if m := regexp.MustCompile(`^(?i:MID\s*)?(\d+)$`).FindStringSubmatch(q); m != nil {
		ids["MID "+m[1]] = true
	} else {
		needle = strings.ToLower(q)
	}
	scan := func(fn func(string)) error {
		for _, f := range files {
			fh, err := os.Open(f)
			if os.IsNotExist(err) {
				continue
			}
			if err != nil {
				return err
			}
			sc := bufio.NewScanner(fh)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				fn(sc.Text())
			}
			fh.Close()
		}
		return nil
	}
	hit := func(l string) bool { return needle != "" && strings.Contains(strings.ToLower(l), needle) }
	// mentions reports whether l names a wanted MID, or a wanted
	// connection and no message.
	mentions := func(l string) bool {
		conn, otherMID := false, false
		for _, m := range idRE.FindAllStringSubmatch(l, -1) {
			switch {
			case m[1] == "MID" && ids[m[0]]:
				return true
			case m[1] == "MID":
				otherMID = true
			case ids[m[0]]:
				conn = true
			}
		}
		return conn && !otherMID
	}
	collect := func(l string) {
		for _, m := range idRE.FindAllStringSubmatch(l, -1) {
			ids[m[0]] = true
		}
	}
	if needle != "" {
		// The messages and connections whose lines contain the query.
		if err := scan(func(l string) {
			if hit(l) {
				collect(l)
			}
		}); err != nil {
			return nil, false, err
		}
	}
	// The connections of those messages.
	if err := scan(func(l string) {
		for _, m := range idRE.FindAllStringSubmatch(l, -1) {
			if m[1] == "MID" && ids[m[0]] {
				collect(l)
				return
			}
		}
	}); err != nil {
		return nil, false, err
	}
	err = scan(func(l string) {
		if hit(l) || mentions(l) {
			lines = append(lines, l)
			if len(lines) > maxLogResults {
				lines = lines[1:]
				truncated = true
			}
		}
	})
	return lines, truncated, err
}

func (s *Server) logs(w http.ResponseWriter, r *http.Request, ss *session) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	p := &page{Title: "Mail Log Search", Nav: "logs"}
	var lines []string
	var truncated bool
	if q != "" {
		var err error
		if lines, truncated, err = searchLogs(s.b.MailLogDir(), q); err != nil {
			p.Error = "mail log: " + err.Error()
		}
	}
	p.Data = struct {
		Query     string
		Lines     []string
		Truncated bool
		Max       int
	}{q, lines, truncated, maxLogResults}
	s.render(w, r, ss, http.StatusOK, "logs", p)
}
