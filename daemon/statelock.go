package daemon

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// stateLock is the lock a daemon holds on its state file while it runs:
// an flock on <state_file>.lock, a file of its own, since the state file
// is replaced by rename at every save and a lock on it would be left
// behind on the old inode. The kernel drops the lock when the process
// dies, kill -9 included, so a stale lock file blocks no one.
type stateLock struct {
	f    *os.File
	path string
}

// lockState takes the lock of the state file at statePath, or says which
// daemon holds it. A second daemon on the same state file would restore
// and save its own view of the grants over the first one's.
func lockState(statePath string, protected []string) (*stateLock, error) {
	path := statePath + ".lock"
	if err := checkStatePath(path, protected); err != nil {
		return nil, fmt.Errorf("failed to lock state file %s: %w", statePath, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("failed to create state directory %s: %w", filepath.Dir(path), err)
	}
	// O_NOFOLLOW and O_NONBLOCK: the lock file is written to, so it must
	// be no symlink to elsewhere, and no FIFO that an open would hang on.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o600)
	if err != nil {
		return nil, fmt.Errorf("failed to open state lock %s: %w", path, err)
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		if err == nil {
			err = errors.New(fileKind(fi.Mode().Type()) + ", not a regular file")
		}
		return nil, fmt.Errorf("failed to open state lock %s: %w", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder := "pid unknown"
		if errors.Is(err, syscall.EWOULDBLOCK) {
			b, _ := io.ReadAll(io.LimitReader(f, 32))
			if pid, perr := strconv.Atoi(strings.TrimSpace(string(b))); perr == nil && pid > 0 {
				holder = "pid " + strconv.Itoa(pid)
			}
			f.Close()
			return nil, fmt.Errorf("state file %s is in use by another knockgate (%s holds %s): two daemons must not share a state file", statePath, holder, path)
		}
		f.Close()
		return nil, fmt.Errorf("failed to lock %s: %w", path, err)
	}
	// The holder's pid, for the error of the next daemon to try.
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return &stateLock{f: f, path: path}, nil
}

// release drops the lock. The lock file stays: removing it would let a
// third daemon lock a new file while a second one holds the old.
func (l *stateLock) release() {
	if l != nil {
		l.f.Close()
	}
}
