//go:build linux

package cri

import "github.com/skbtrail/skbtrail/tests/containerd"

// BuildImage writes an OCI image layout archive (what `ctr images import`
// reads) to path: a single uncompressed layer with the static busybox
// binary at /bin/busybox and /bin/sh, named ref. Its default command
// sleeps for ever, so it also serves as the pod sandbox ("pause") image.
func BuildImage(path, busybox, ref string) error {
	img, err := containerd.BusyboxImage(busybox, ref)
	if err != nil {
		return err
	}
	return containerd.WriteArchive(path, img)
}
