// Package atomicfile replaces a file's contents so that a crash or a
// concurrent reader at any moment sees either the old file or the new one,
// never half of one, and so that the new one survives a power cut once
// the call returns. It serves the daemon's state file and `knockgate fmt`.
package atomicfile

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Write replaces path with data, as a file of mode perm: a temporary file
// in the same directory (a rename is atomic only within one file system)
// is written, synced and renamed over path, and the directory is synced so
// that the rename itself is durable. Missing parent directories are
// created with mode 0700. A symlink at path is replaced, never written
// through: the file it points to is left as it was. On error path is
// untouched and no temporary file is left behind.
func Write(path string, data []byte, perm fs.FileMode) error {
	return write(path, data, perm, nil)
}

// Replace is Write for a file that exists: the new file gets old's mode
// and, where the caller may give files away (root), old's owner and group,
// as an editor that saves by rename keeps them. old is the fs.FileInfo of
// the file being replaced, from os.Stat.
func Replace(path string, data []byte, old fs.FileInfo) error {
	st, _ := old.Sys().(*syscall.Stat_t)
	return write(path, data, old.Mode().Perm(), st)
}

func write(path string, data []byte, perm fs.FileMode, owner *syscall.Stat_t) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("failed to create directory %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("failed to create a temporary file for %s: %w", path, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("failed to write %s: %w", tmp, err)
	}
	// CreateTemp makes the file 0600; Chmod, unlike open, ignores the
	// umask, so the mode is the one asked for.
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("failed to set the mode of %s: %w", tmp, err)
	}
	if owner != nil && (int(owner.Uid) != os.Geteuid() || int(owner.Gid) != os.Getegid()) {
		// Only root may give a file away; anyone else ends up owning the
		// new file.
		_ = f.Chown(int(owner.Uid), int(owner.Gid))
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("failed to sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("failed to write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("failed to replace %s: %w", path, err)
	}
	// The rename is durable only once the directory is synced. It has
	// happened, though: a failure here is no reason to report the file
	// unwritten, and a reader already sees the new one.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
}
