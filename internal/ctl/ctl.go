// Package ctl is the control API of a running Outpost: HTTP with JSON over
// a unix socket in the data directory (mode 0600, so only the daemon's user
// and root can use it). The CLI and, later, the web UI are its clients;
// neither has a model of its own.
//
// Endpoints:
//
//	GET  /v1/queue              queued messages
//	GET  /v1/queue/{mid}        one message
//	GET  /v1/destinations       destination queues
//	POST /v1/queue/flush        retry every deferred message now
//	POST /v1/queue/{mid}/delete remove a message without a DSN
//	POST /v1/queue/{mid}/bounce bounce a message's pending recipients
//	GET  /v1/mta-sts/cache                   cached MTA-STS policies
//	GET  /v1/mta-sts/cache/{domain}          one cached policy
//	POST /v1/mta-sts/cache/{domain}/refresh  look up and fetch the policy now
//	POST /v1/mta-sts/cache/{domain}/flush    forget the cached policy
//	POST /v1/config/commit      {"Comment","User"}: apply the pending configuration
//	POST /v1/config/rollback    {"ID","User"}: re-apply an earlier commit
//	GET  /v1/tail               follow the mail log (text/plain stream)
package ctl

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"

	"outpost/internal/qmgr"
)

// Queue is what the control API needs of the queue manager.
type Queue interface {
	// Each calls f for every queued message, oldest first, until f
	// returns false.
	Each(f func(qmgr.Info) bool)
	Show(mid uint64) (qmgr.Info, bool)
	Destinations() []qmgr.DestInfo
	Flush() int
	Delete(mid uint64) error
	BounceNow(ctx context.Context, mid uint64) error
}

// PolicyCache is the MTA-STS policy cache's admin side.
type PolicyCache interface {
	List() any
	Show(domain string) (any, error)
	Refresh(ctx context.Context, domain string) (any, error)
	Flush(ctx context.Context, domain string) error
}

// ConfigAdmin commits and rolls back configuration in the running server.
type ConfigAdmin interface {
	Commit(comment, user string) (any, error)
	Rollback(id int, user string) (any, error)
}

// LogFeed streams mail-log lines.
type LogFeed interface {
	Subscribe() (<-chan string, func())
}

// Server serves the control API.
type Server struct {
	srv  *http.Server
	ln   net.Listener
	path string
}

// Listen creates the socket (replacing a stale one) and serves on it.
func Listen(path string, q Queue, logs LogFeed, sts PolicyCache, cfg ConfigAdmin) (*Server, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("control socket %s: another outpost is running", path)
	}
	os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/queue", func(w http.ResponseWriter, r *http.Request) {
		// Streamed row by row: a large queue is never built in memory
		// (messages waiting on disk are read back one at a time).
		w.Header().Set("Content-Type", "application/json")
		bw := bufio.NewWriter(w)
		bw.WriteString("[")
		sep := "\n  "
		q.Each(func(in qmgr.Info) bool {
			b, err := json.MarshalIndent(in, "  ", "  ")
			if err != nil {
				return false
			}
			bw.WriteString(sep)
			bw.Write(b)
			sep = ",\n  "
			return r.Context().Err() == nil
		})
		if sep == "\n  " {
			bw.WriteString("]\n")
		} else {
			bw.WriteString("\n]\n")
		}
		bw.Flush()
	})
	mux.HandleFunc("GET /v1/destinations", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, q.Destinations()) })
	mux.HandleFunc("GET /v1/queue/{mid}", func(w http.ResponseWriter, r *http.Request) {
		mid, ok := parseMID(w, r)
		if !ok {
			return
		}
		in, found := q.Show(mid)
		if !found {
			http.Error(w, fmt.Sprintf("MID %d is not in the queue", mid), http.StatusNotFound)
			return
		}
		writeJSON(w, in)
	})
	mux.HandleFunc("POST /v1/queue/flush", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, map[string]int{"flushed": q.Flush()})
	})
	mux.HandleFunc("POST /v1/queue/{mid}/delete", func(w http.ResponseWriter, r *http.Request) {
		if mid, ok := parseMID(w, r); ok {
			result(w, q.Delete(mid))
		}
	})
	mux.HandleFunc("POST /v1/queue/{mid}/bounce", func(w http.ResponseWriter, r *http.Request) {
		if mid, ok := parseMID(w, r); ok {
			result(w, q.BounceNow(r.Context(), mid))
		}
	})
	mux.HandleFunc("GET /v1/mta-sts/cache", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, sts.List()) })
	mux.HandleFunc("GET /v1/mta-sts/cache/{domain}", func(w http.ResponseWriter, r *http.Request) {
		e, err := sts.Show(r.PathValue("domain"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusNotFound)
			return
		}
		writeJSON(w, e)
	})
	mux.HandleFunc("POST /v1/mta-sts/cache/{domain}/refresh", func(w http.ResponseWriter, r *http.Request) {
		e, err := sts.Refresh(r.Context(), r.PathValue("domain"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		writeJSON(w, e)
	})
	mux.HandleFunc("POST /v1/mta-sts/cache/{domain}/flush", func(w http.ResponseWriter, r *http.Request) {
		result(w, sts.Flush(r.Context(), r.PathValue("domain")))
	})
	mux.HandleFunc("POST /v1/config/commit", func(w http.ResponseWriter, r *http.Request) {
		var req struct{ Comment, User string }
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		c, err := cfg.Commit(req.Comment, req.User)
		if err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		writeJSON(w, c)
	})
	mux.HandleFunc("POST /v1/config/rollback", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			ID   int
			User string
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		c, err := cfg.Rollback(req.ID, req.User)
		if err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		writeJSON(w, c)
	})
	mux.HandleFunc("GET /v1/tail", func(w http.ResponseWriter, r *http.Request) {
		ch, cancel := logs.Subscribe()
		defer cancel()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fl, _ := w.(http.Flusher)
		for {
			select {
			case <-r.Context().Done():
				return
			case line := <-ch:
				if _, err := io.WriteString(w, line); err != nil {
					return
				}
				if fl != nil {
					fl.Flush()
				}
			}
		}
	})
	s := &Server{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, ln: ln, path: path}
	go s.srv.Serve(ln)
	return s, nil
}

// Close stops the server and removes the socket.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	os.Remove(s.path)
	return err
}

func parseMID(w http.ResponseWriter, r *http.Request) (uint64, bool) {
	mid, err := strconv.ParseUint(r.PathValue("mid"), 10, 64)
	if err != nil {
		http.Error(w, "MID must be a number", http.StatusBadRequest)
		return 0, false
	}
	return mid, true
}

func result(w http.ResponseWriter, err error) {
	if err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	writeJSON(w, map[string]string{"result": "ok"})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// Client talks to a running daemon.
type Client struct {
	http *http.Client
	path string
}

// ErrNotRunning means no daemon answers on the socket.
var ErrNotRunning = errors.New("outpost is not running (no control socket answers)")

// Dial makes a client for the socket at path.
func Dial(path string) *Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &Client{http: &http.Client{Transport: tr}, path: path}
}

// Do sends a request and decodes a JSON answer into out (nil: discard).
func (c *Client) Do(ctx context.Context, method, path string, out any) error {
	return c.DoJSON(ctx, method, path, nil, out)
}

// DoJSON is Do with a JSON request body (nil: none).
func (c *Client) DoJSON(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://outpost"+path, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		var ne *net.OpError
		if errors.As(err, &ne) {
			return fmt.Errorf("%w: %s", ErrNotRunning, c.path)
		}
		return fmt.Errorf("control request: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return errors.New(string(bytesTrim(b)))
	}
	if out == nil {
		io.Copy(io.Discard, resp.Body)
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Tail copies the mail-log stream to w until ctx ends.
func (c *Client) Tail(ctx context.Context, w io.Writer) error {
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://outpost/v1/tail", nil)
	resp, err := c.http.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("%w: %s", ErrNotRunning, c.path)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		fmt.Fprintln(w, sc.Text())
	}
	return nil
}

func bytesTrim(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}
