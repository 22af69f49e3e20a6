package webui

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"outpost/internal/configstore"
)

type commitData struct {
	Diff    string
	Comment string
	History []historyRow
}

type historyRow struct {
	configstore.Commit
	Current     bool
	CanRollback bool
}

func (s *Server) commitPage(w http.ResponseWriter, r *http.Request, ss *session) {
	s.showCommit(w, r, ss, http.StatusOK, "", "")
}

func (s *Server) showCommit(w http.ResponseWriter, r *http.Request, ss *session, status int, errText, comment string) {
	p := &page{Title: "Commit Changes", Nav: "commit", Error: errText}
	d := commitData{Comment: comment}
	var err error
	if d.Diff, err = s.b.Diff(); err != nil {
		p.Error = err.Error()
	}
	hist, err := s.b.History()
	if err != nil {
		p.Error = err.Error()
	}
	// Newest first; rollback reaches the last KeepRollback commits.
	for i := len(hist) - 1; i >= 0 && len(d.History) < configstore.KeepRollback; i-- {
		d.History = append(d.History, historyRow{Commit: hist[i], Current: i == len(hist)-1, CanRollback: i != len(hist)-1})
	}
	p.Data = d
	s.render(w, r, ss, status, "commit", p)
}

func (s *Server) commit(w http.ResponseWriter, r *http.Request, ss *session) {
	comment := strings.TrimSpace(r.PostForm.Get("comment"))
	if _, err := s.b.Commit(comment, ss.user); err != nil {
		if errors.Is(err, configstore.ErrNothingPending) {
			s.showCommit(w, r, ss, http.StatusConflict, "There are no pending changes to commit.", comment)
			return
		}
		s.showCommit(w, r, ss, http.StatusConflict, "Not committed: "+err.Error(), comment)
		return
	}
	redirect(w, r, "/commit", "committed")
}

func (s *Server) abandon(w http.ResponseWriter, r *http.Request, ss *session) {
	if err := s.b.Clear(); err != nil {
		s.showCommit(w, r, ss, http.StatusInternalServerError, err.Error(), "")
		return
	}
	redirect(w, r, "/commit", "abandoned")
}

func (s *Server) rollback(w http.ResponseWriter, r *http.Request, ss *session) {
	id, err := strconv.Atoi(r.PostForm.Get("id"))
	if err != nil || id < 1 {
		http.Error(w, "bad commit id", http.StatusBadRequest)
		return
	}
	if _, err := s.b.Rollback(id, ss.user); err != nil {
		s.showCommit(w, r, ss, http.StatusConflict, "Not rolled back: "+err.Error(), "")
		return
	}
	redirect(w, r, "/commit", "rolledback")
}
