package stack

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Proc is one started process in its own process group, with its output in
// a log file. It can be stopped, killed and started again with the same
// command line and environment.
type Proc struct {
	Name    string
	LogPath string
	bin     string
	args    []string
	env     []string
	cmd     *exec.Cmd
	log     *os.File
	done    chan struct{}
}

// Launch starts bin --config config with env added to this process's
// environment; output goes to logPath (appended on restarts).
func Launch(name, bin, config, logPath string, env map[string]string) (*Proc, error) {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	p := &Proc{Name: name, LogPath: logPath, bin: bin, args: []string{"--config", config}, env: os.Environ()}
	for k, v := range env {
		p.env = append(p.env, k+"="+v)
	}
	return p, p.Start()
}

// Start starts the process (again, after it ended).
func (p *Proc) Start() error {
	if p.cmd != nil && !p.exited() {
		return fmt.Errorf("%s is running", p.Name)
	}
	log, err := os.OpenFile(p.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr, cmd.Env = log, log, p.env
	// own process group, so that signals reach children too
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		log.Close()
		return fmt.Errorf("start %s: %w", p.bin, err)
	}
	p.cmd, p.log, p.done = cmd, log, make(chan struct{})
	go func(done chan struct{}) { _ = cmd.Wait(); log.Close(); close(done) }(p.done)
	return nil
}

func (p *Proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Alive reports whether the process is running.
func (p *Proc) Alive() bool { return p.cmd != nil && !p.exited() }

// Terminate sends SIGTERM and waits for the process to end; after grace it
// sends SIGKILL and returns an error.
func (p *Proc) Terminate(grace time.Duration) error {
	if !p.Alive() {
		return nil
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		p.Kill()
		return fmt.Errorf("%s did not end within %v of SIGTERM", p.Name, grace)
	}
}

// Kill sends SIGKILL and waits for the process to end.
func (p *Proc) Kill() {
	if !p.Alive() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// CPU is the user and system time the running process has used, from
// /proc/<pid>/stat.
func (p *Proc) CPU() (time.Duration, error) {
	if !p.Alive() {
		return 0, errors.New(p.Name + " is not running")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold spaces.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("short /proc stat for %s", p.Name)
	}
	var ticks int64
	for _, f := range fields[11:13] { // utime, stime
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// TotalCPU is the CPU time the running procs have used, summed.
func TotalCPU(procs ...*Proc) (time.Duration, error) {
	var d time.Duration
	for _, p := range procs {
		c, err := p.CPU()
		if err != nil {
			return 0, err
		}
		d += c
	}
	return d, nil
}

// clockTicks is USER_HZ, the unit of /proc's CPU times (100 on Linux).
const clockTicks = 100

// RSS is the resident set size of the running process in bytes.
func (p *Proc) RSS() (int64, error) {
	if !p.Alive() {
		return 0, errors.New(p.Name + " is not running")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	fields := strings.Fields(string(b))
	if len(fields) < 2 {
		return 0, fmt.Errorf("short /proc statm for %s", p.Name)
	}
	pages, err := strconv.ParseInt(fields[1], 10, 64)
	if err != nil {
		return 0, err
	}
	return pages * int64(os.Getpagesize()), nil
}

// Tail is the last n bytes of the process's log.
func (p *Proc) Tail(n int) string {
	b, _ := os.ReadFile(p.LogPath)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
