package nodeimage

import (
	"archive/tar"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// entry is one file the node image adds or replaces on top of its Debian
// root: content, a host file to copy, a symlink or a directory.
type entry struct {
	Mode    int64
	Data    []byte
	Src     string // host file, read when written
	Link    string // symlink target
	Dir     bool
	Deleted bool              // leave the root's file out
	Xattrs  map[string]string // e.g. security.capability (file capabilities)
}

// tree is the overlay: path (relative, no leading slash) → entry.
type tree map[string]*entry

func (t tree) file(p string, mode int64, data []byte) { t[p] = &entry{Mode: mode, Data: data} }
func (t tree) copy(p string, mode int64, src string)  { t[p] = &entry{Mode: mode, Src: src} }
func (t tree) link(p, target string)                  { t[p] = &entry{Link: target} }
func (t tree) dir(p string)                           { t[p] = &entry{Dir: true, Mode: 0o755} }
func (t tree) remove(p string)                        { t[p] = &entry{Deleted: true} }

// writeRootTar writes root with the overlay applied as one tar stream:
// entries in lexical order, times fixed to epoch, owners and modes as on
// disk (hard links kept), and nothing of /dev, /proc, /sys or /run (the
// container runtime provides them).
func writeRootTar(w io.Writer, root string, overlay tree, epoch time.Time) error {
	tw := tar.NewWriter(w)
	written := map[string]bool{}
	inodes := map[uint64]string{}
	skipUnder := []string{"dev/", "proc/", "sys/", "run/"}
	walk := func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." || rel == ".complete" {
			return nil
		}
		rel = filepath.ToSlash(rel)
		for _, s := range skipUnder {
			if strings.HasPrefix(rel, s) {
				return nil
			}
		}
		if e, ok := overlay[rel]; ok {
			written[rel] = true
			if e.Deleted {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if !(e.Dir && d.IsDir()) { // a replaced directory keeps its contents
				return writeEntry(tw, rel, e, epoch)
			}
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		mode := fi.Mode()
		if mode&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeSocket|fs.ModeNamedPipe) != 0 {
			return nil
		}
		var target string
		if mode&fs.ModeSymlink != 0 {
			if target, err = os.Readlink(p); err != nil {
				return err
			}
		}
		hdr, err := tar.FileInfoHeader(fi, target)
		if err != nil {
			return err
		}
		hdr.Name = rel
		if fi.IsDir() {
			hdr.Name += "/"
		}
		hdr.Uname, hdr.Gname = "", ""
		hdr.ModTime, hdr.AccessTime, hdr.ChangeTime = epoch, time.Time{}, time.Time{}
		hdr.Format = tar.FormatPAX
		st, _ := fi.Sys().(*syscall.Stat_t)
		if st != nil {
			hdr.Uid, hdr.Gid = int(st.Uid), int(st.Gid)
			if mode.IsRegular() && st.Nlink > 1 {
				if first, ok := inodes[st.Ino]; ok {
					hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
					return tw.WriteHeader(hdr)
				}
				inodes[st.Ino] = rel
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if mode.IsRegular() {
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			if _, err := io.Copy(tw, f); err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
		}
		return nil
	}
	if root != "" { // "": the overlay alone
		if err := filepath.WalkDir(root, walk); err != nil {
			return err
		}
	}
	// Overlay entries the root does not have, parents first.
	var rest []string
	for p, e := range overlay {
		if !written[p] && !e.Deleted {
			rest = append(rest, p)
		}
	}
	sort.Strings(rest)
	for _, p := range rest {
		var missing []string // parents not yet in the stream, innermost first
		for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
			if _, ok := overlay[dir]; ok || written[dir] || (root != "" && exists(filepath.Join(root, dir))) {
				break
			}
			missing = append(missing, dir)
		}
		for i := len(missing) - 1; i >= 0; i-- {
			if err := writeEntry(tw, missing[i], &entry{Dir: true, Mode: 0o755}, epoch); err != nil {
				return err
			}
			written[missing[i]] = true
		}
		if err := writeEntry(tw, p, overlay[p], epoch); err != nil {
			return err
		}
		written[p] = true
	}
	return tw.Close()
}

func writeEntry(tw *tar.Writer, name string, e *entry, epoch time.Time) error {
	hdr := &tar.Header{Name: name, Mode: e.Mode, ModTime: epoch, Format: tar.FormatPAX}
	for k, v := range e.Xattrs {
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = map[string]string{}
		}
		hdr.PAXRecords["SCHILY.xattr."+k] = v
	}
	switch {
	case e.Dir:
		hdr.Typeflag, hdr.Name = tar.TypeDir, name+"/"
		if hdr.Mode == 0 {
			hdr.Mode = 0o755
		}
		return tw.WriteHeader(hdr)
	case e.Link != "":
		hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, e.Link, 0o777
		return tw.WriteHeader(hdr)
	}
	data := e.Data
	if e.Src != "" {
		var err error
		if data, err = os.ReadFile(e.Src); err != nil {
			return err
		}
	}
	hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(data))
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err := tw.Write(data)
	return err
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}
