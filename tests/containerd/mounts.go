package containerd

import (
	"strconv"
	"strings"
)

// UnescapeMount decodes a path as /proc/*/mountinfo writes it (octal
// escapes such as \040 for a space), for the tests that find and undo the
// mounts a containerd or kubelet of theirs left.
func UnescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
