package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clkTck is USER_HZ, the unit of utime/stime in /proc/<pid>/stat. It is 100
// on every Linux architecture Go supports.
const clkTck = 100

// accounting tells how CPU and memory of one measured instance are found: a
// cgroup the instance was started in (exact: includes every process that ever
// ran in it, even short-lived ones), or else a process tree under a root pid
// (utime+stime of live processes plus cutime+cstime, i.e. reaped children).
type accounting struct {
	cg      *cgroup
	rootPID func() int // for the process-tree fallback
}

// cgroup is a CPU-accounting cgroup made for one instance (v1 cpuacct or v2).
type cgroup struct {
	dir string
	v2  bool
}

// newCgroup makes a fresh cgroup, or returns nil (the caller falls back to
// process-tree accounting) when this system does not let us.
func newCgroup(tag string) *cgroup {
	name := fmt.Sprintf("outpost-bench-%d-%s", os.Getpid(), tag)
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		// cgroup v2: make it next to ours (our own cgroup may hold processes,
		// so a child of it would violate "no internal processes").
		self, err := os.ReadFile("/proc/self/cgroup")
		if err != nil {
			return nil
		}
		cur := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(self)), "0::"))
		for _, parent := range []string{filepath.Dir(cur), "/"} {
			dir := filepath.Join("/sys/fs/cgroup", parent, name)
			if os.Mkdir(dir, 0o755) == nil {
				return &cgroup{dir: dir, v2: true}
			}
		}
		return nil
	}
	dir := filepath.Join("/sys/fs/cgroup/cpuacct", name)
	if os.Mkdir(dir, 0o755) != nil {
		return nil
	}
	return &cgroup{dir: dir}
}

func (c *cgroup) procsFile() string { return filepath.Join(c.dir, "cgroup.procs") }

// cpu returns the CPU time used by every process that ran in the cgroup.
func (c *cgroup) cpu() (time.Duration, error) {
	if c.v2 {
		b, err := os.ReadFile(filepath.Join(c.dir, "cpu.stat"))
		if err != nil {
			return 0, err
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "usage_usec" {
				us, err := strconv.ParseInt(f[1], 10, 64)
				return time.Duration(us) * time.Microsecond, err
			}
		}
		return 0, fmt.Errorf("%s: no usage_usec", c.dir)
	}
	b, err := os.ReadFile(filepath.Join(c.dir, "cpuacct.usage"))
	if err != nil {
		return 0, err
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
	return time.Duration(ns), err
}

func (c *cgroup) pids() []int {
	b, err := os.ReadFile(c.procsFile())
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if p, err := strconv.Atoi(f); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// killAll SIGKILLs whatever is left in the cgroup (only processes this
// runner started end up there) and removes it.
func (c *cgroup) killAll() {
	for i := 0; i < 50; i++ {
		ps := c.pids()
		if len(ps) == 0 {
			break
		}
		for _, p := range ps {
			syscall.Kill(p, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i := 0; i < 50; i++ {
		if os.Remove(c.dir) == nil || os.IsNotExist(os.Remove(c.dir)) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// procStat holds the fields of /proc/<pid>/stat we use.
type procStat struct {
	pid, ppid                    int
	utime, stime, cutime, cstime int64
}

func readStat(pid int) (procStat, bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return procStat{}, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14 → f[11].
	if len(f) < 15 {
		return procStat{}, false
	}
	n := func(k int) int64 { v, _ := strconv.ParseInt(f[k], 10, 64); return v }
	return procStat{pid: pid, ppid: int(n(1)), utime: n(11), stime: n(12), cutime: n(13), cstime: n(14)}, true
}

// tree returns root and all its live descendants.
func tree(root int) []procStat {
	ents, _ := os.ReadDir("/proc")
	children := map[int][]procStat{}
	var rootStat procStat
	found := false
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, ok := readStat(pid)
		if !ok {
			continue
		}
		if pid == root {
			rootStat, found = st, true
		}
		children[st.ppid] = append(children[st.ppid], st)
	}
	if !found {
		return nil
	}
	out := []procStat{rootStat}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i].pid]...)
	}
	return out
}

func (a *accounting) pids() []int {
	if a.cg != nil {
		return a.cg.pids()
	}
	var out []int
	if r := a.rootPID(); r > 0 {
		for _, st := range tree(r) {
			out = append(out, st.pid)
		}
	}
	return out
}

// cpu returns the instance's cumulative CPU time so far.
func (a *accounting) cpu() (time.Duration, error) {
	if a.cg != nil {
		return a.cg.cpu()
	}
	r := a.rootPID()
	if r <= 0 {
		return 0, fmt.Errorf("no root process")
	}
	var ticks int64
	for _, st := range tree(r) {
		ticks += st.utime + st.stime + st.cutime + st.cstime
	}
	return time.Duration(ticks) * time.Second / clkTck, nil
}

func (a *accounting) method() string {
	if a.cg == nil {
		return "process tree (/proc stat utime+stime+cutime+cstime)"
	}
	if a.cg.v2 {
		return "cgroup v2 cpu.stat usage_usec"
	}
	return "cgroup v1 cpuacct.usage"
}

// memSample is the summed memory of an instance's processes at one moment.
type memSample struct {
	rssKB, pssKB, hwmKB int64
	procs               int
}

func readMem(pid int) (rss, pss, hwm int64) {
	if f, err := os.Open(fmt.Sprintf("/proc/%d/smaps_rollup", pid)); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			l := sc.Text()
			switch {
			case strings.HasPrefix(l, "Rss:"):
				rss = kb(l)
			case strings.HasPrefix(l, "Pss:"):
				pss = kb(l)
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid)); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "VmHWM:") {
				hwm = kb(l)
			} else if rss == 0 && strings.HasPrefix(l, "VmRSS:") {
				rss = kb(l)
			}
		}
	}
	return
}

func kb(line string) int64 {
	f := strings.Fields(line)
	if len(f) < 2 {
		return 0
	}
	v, _ := strconv.ParseInt(f[1], 10, 64)
	return v
}

// memPeaks samples an instance's memory periodically until stopped.
type memPeaks struct {
	mu      sync.Mutex
	peak    memSample // per-field maxima of the summed samples
	stop    chan struct{}
	done    chan struct{}
	samples int
}

func sampleMemory(a *accounting, every time.Duration) *memPeaks {
	m := &memPeaks{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(m.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			m.sampleOnce(a)
			select {
			case <-m.stop:
				m.sampleOnce(a)
				return
			case <-t.C:
			}
		}
	}()
	return m
}

func (m *memPeaks) sampleOnce(a *accounting) {
	var s memSample
	for _, p := range a.pids() {
		rss, pss, hwm := readMem(p)
		s.rssKB += rss
		s.pssKB += pss
		s.hwmKB += hwm
		s.procs++
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.samples++
	m.peak.rssKB = max(m.peak.rssKB, s.rssKB)
	m.peak.pssKB = max(m.peak.pssKB, s.pssKB)
	m.peak.hwmKB = max(m.peak.hwmKB, s.hwmKB)
	m.peak.procs = max(m.peak.procs, s.procs)
}

func (m *memPeaks) finish() memSample {
	close(m.stop)
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peak
}

func pidAlive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}

// waitListen waits until something accepts TCP connections on addr.
func waitListen(addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(100 * time.Millisecond)
	}
}
