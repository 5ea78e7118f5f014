//go:build linux

package containerd

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"
)

// OCI media types.
const (
	mediaIndex    = "application/vnd.oci.image.index.v1+json"
	mediaManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig   = "application/vnd.oci.image.config.v1+json"
	mediaLayer    = "application/vnd.oci.image.layer.v1.tar"
)

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// File is one entry of an image's single layer, in order: a directory
// (Dir), a symbolic link (Link) or a regular file (Data).
type File struct {
	Path string // relative, no leading slash; directories end in "/"
	Mode int64
	Dir  bool
	Link string
	Data []byte
}

// Image is a single-layer image for the host's architecture.
type Image struct {
	Ref        string // name containerd gives it on import, e.g. "docker.io/x/y:tag"
	Files      []File
	Entrypoint []string
	Cmd        []string
	Env        []string
	CreatedBy  string // the history entry
}

// WriteArchive writes img as an OCI image layout archive (what
// `ctr images import` reads) to path: one uncompressed layer, every
// timestamp at the epoch, so the same input gives the same digests.
func WriteArchive(path string, img Image) error {
	mtime := time.Unix(0, 0)
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	for _, f := range img.Files {
		h := &tar.Header{Name: f.Path, Mode: f.Mode, ModTime: mtime}
		switch {
		case f.Dir:
			h.Typeflag = tar.TypeDir
		case f.Link != "":
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.Link
		default:
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	layerDigest := digest(layer.Bytes())

	created := mtime.UTC().Format(time.RFC3339)
	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      created,
		"config": map[string]any{
			"Entrypoint": img.Entrypoint,
			"Cmd":        img.Cmd,
			"Env":        img.Env,
			"WorkingDir": "/",
		},
		"rootfs":  map[string]any{"type": "layers", "diff_ids": []string{layerDigest}},
		"history": []map[string]any{{"created": created, "created_by": img.CreatedBy}},
	})
	if err != nil {
		return err
	}
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaManifest,
		"config":        descriptor{MediaType: mediaConfig, Digest: digest(config), Size: int64(len(config))},
		"layers":        []descriptor{{MediaType: mediaLayer, Digest: layerDigest, Size: int64(layer.Len())}},
	})
	if err != nil {
		return err
	}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaIndex,
		"manifests": []descriptor{{
			MediaType: mediaManifest, Digest: digest(manifest), Size: int64(len(manifest)),
			Platform: &platform{Architecture: runtime.GOARCH, OS: "linux"},
			Annotations: map[string]string{
				"io.containerd.image.name":          img.Ref,
				"org.opencontainers.image.ref.name": refTag(img.Ref),
			},
		}},
	})
	if err != nil {
		return err
	}

	// The layout archive.
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	out := tar.NewWriter(f)
	add := func(name string, data []byte) error {
		if err := out.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: mtime}); err != nil {
			return err
		}
		_, err := out.Write(data)
		return err
	}
	for _, d := range []string{"blobs/", "blobs/sha256/"} {
		if err := out.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o755, ModTime: mtime}); err != nil {
			return err
		}
	}
	for _, b := range [][]byte{layer.Bytes(), config, manifest} {
		if err := add("blobs/sha256/"+digest(b)[len("sha256:"):], b); err != nil {
			return err
		}
	}
	if err := add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	if err := add("index.json", index); err != nil {
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// refTag is the tag of ref ("latest" when it has none).
func refTag(ref string) string {
	for i := len(ref) - 1; i >= 0; i-- {
		switch ref[i] {
		case ':':
			return ref[i+1:]
		case '/':
			return "latest"
		}
	}
	return "latest"
}

func digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// rootDirs are the directories every image here starts with.
var rootDirs = []File{
	{Path: "bin/", Mode: 0o755, Dir: true}, {Path: "dev/", Mode: 0o755, Dir: true},
	{Path: "etc/", Mode: 0o755, Dir: true}, {Path: "proc/", Mode: 0o755, Dir: true},
	{Path: "sys/", Mode: 0o755, Dir: true}, {Path: "tmp/", Mode: 0o1777, Dir: true},
	{Path: "var/", Mode: 0o755, Dir: true},
}

var rootFiles = []File{
	{Path: "etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/:/bin/sh\n")},
	{Path: "etc/group", Mode: 0o644, Data: []byte("root:x:0:\n")},
}

// BusyboxImage is an image with the static busybox binary at
// /bin/busybox and /bin/sh and a /www/index.html. Its default command
// sleeps for ever, so it also serves as the pod sandbox ("pause") image.
func BusyboxImage(busybox, ref string) (Image, error) {
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return Image{}, err
	}
	files := append(append([]File(nil), rootDirs...), File{Path: "www/", Mode: 0o755, Dir: true},
		File{Path: "bin/busybox", Mode: 0o755, Data: bb},
		File{Path: "bin/sh", Mode: 0o777, Link: "busybox"})
	files = append(files, rootFiles...)
	files = append(files, File{Path: "www/index.html", Mode: 0o644, Data: []byte("hi\n")})
	return Image{
		Ref: ref, Files: files,
		Entrypoint: []string{"/bin/busybox"}, Cmd: []string{"sleep", "2147483647"},
		Env: []string{"PATH=/bin"}, CreatedBy: "skbtrail tests/containerd BusyboxImage",
	}, nil
}

// BinaryImage is an image holding one statically linked program at
// /usr/local/bin/<name>, its entrypoint (arguments come from the pod's
// args), with /etc/passwd, /etc/group, /tmp and the usual mount points.
func BinaryImage(binary, name, ref string) (Image, error) {
	if !IsStatic(binary) {
		return Image{}, fmt.Errorf("containerd: %s is not a statically linked executable (build it with CGO_ENABLED=0)", binary)
	}
	data, err := os.ReadFile(binary)
	if err != nil {
		return Image{}, err
	}
	files := append(append([]File(nil), rootDirs...), File{Path: "run/", Mode: 0o755, Dir: true},
		File{Path: "usr/", Mode: 0o755, Dir: true}, File{Path: "usr/local/", Mode: 0o755, Dir: true},
		File{Path: "usr/local/bin/", Mode: 0o755, Dir: true},
		File{Path: "usr/local/bin/" + name, Mode: 0o755, Data: data})
	files = append(files, rootFiles...)
	return Image{
		Ref: ref, Files: files, Entrypoint: []string{"/usr/local/bin/" + name},
		Env: []string{"PATH=/usr/local/bin:/bin"}, CreatedBy: "skbtrail tests/containerd BinaryImage " + name,
	}, nil
}

// BusyboxPath finds a statically linked busybox.
func BusyboxPath() (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if IsStatic(p) {
			return p, nil
		}
	}
	return "", errors.New("needs a static busybox (busybox-static)")
}

// IsStatic reports whether the ELF file at path has no program
// interpreter (a statically linked executable).
func IsStatic(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return f.Type == elf.ET_EXEC || f.Type == elf.ET_DYN
}
