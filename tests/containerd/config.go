//go:build linux

// Package containerd holds what the end-to-end tests need to run a private
// containerd 1.6 with its CRI plugin (tests/cri talks to it through the CRI
// itself, tests/cluster puts a real kubelet in front of it): its
// configuration file, a CNI bridge network for it, and OCI image archives
// to import into it with `ctr images import`. Nothing here starts a process.
package containerd

import (
	"encoding/json"
	"fmt"
	"os"
)

// Config is a private containerd's configuration (config.toml version 2).
type Config struct {
	Root    string // containerd's root directory
	State   string // its state directory
	Address string // the gRPC socket; the ttrpc socket is Address + ".ttrpc"
	OptPath string // the opt plugin's directory
	// SandboxImage is the CRI plugin's "pause" image: it must have been
	// imported (nothing is pulled).
	SandboxImage string
	RuncRoot     string // runc's --root
	CNIBinDir    string // CNI plugins (Debian: /usr/lib/cni)
	CNIConfDir   string // CNI network configurations (only the first is used)
	LogLevel     string // default "info"
}

// TOML returns the configuration file. Settings that matter here:
//   - restrict_oom_score_adj: without CAP_SYS_RESOURCE (as in some
//     sandboxes, this machine included) runc fails to lower a container's
//     OOM score with "can't get final child's PID from pipe"; this clamps
//     the score to containerd's own instead.
//   - SystemdCgroup = false: the cgroupfs driver (PID 1 need not be
//     systemd); a kubelet in front must use cgroupDriver: cgroupfs.
//   - no AppArmor, no SELinux; the streaming server on 127.0.0.1, any port.
func (c Config) TOML() string {
	level := c.LogLevel
	if level == "" {
		level = "info"
	}
	return fmt.Sprintf(`version = 2
root = %[1]q
state = %[2]q

[grpc]
  address = %[3]q

[ttrpc]
  address = %[4]q

[debug]
  level = %[10]q

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %[5]q
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = %[6]q
    restrict_oom_score_adj = true
    disable_apparmor = true
    enable_selinux = false
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          Root = %[7]q
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = %[8]q
      conf_dir = %[9]q
      max_conf_num = 1
`, c.Root, c.State, c.Address, c.Address+".ttrpc", c.OptPath, c.SandboxImage, c.RuncRoot, c.CNIBinDir, c.CNIConfDir, level)
}

// WriteConfig writes c.TOML() to path (mode 0600).
func WriteConfig(path string, c Config) error {
	if err := os.WriteFile(path, []byte(c.TOML()), 0o600); err != nil {
		return fmt.Errorf("containerd: write config: %w", err)
	}
	return nil
}

// BridgeNetwork is a CNI network configuration list: the bridge plugin
// (no gateway address on the bridge, no masquerading, no hairpin) with
// host-local IPAM.
type BridgeNetwork struct {
	Name    string // CNI network name
	Bridge  string // bridge device, created by the plugin in the runtime's netns
	Subnet  string // pod addresses
	DataDir string // host-local's allocation directory
}

// Conflist returns the network's .conflist JSON.
func (n BridgeNetwork) Conflist() ([]byte, error) {
	return json.MarshalIndent(map[string]any{
		"cniVersion": "1.0.0",
		"name":       n.Name,
		"plugins": []any{map[string]any{
			"type":        "bridge",
			"bridge":      n.Bridge,
			"isGateway":   false,
			"ipMasq":      false,
			"hairpinMode": false,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]string{{{"subnet": n.Subnet}}},
				"dataDir": n.DataDir,
			},
		}},
	}, "", "  ")
}

// Write writes the conflist to path (mode 0600).
func (n BridgeNetwork) Write(path string) error {
	conf, err := n.Conflist()
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, conf, 0o600); err != nil {
		return fmt.Errorf("containerd: write CNI config: %w", err)
	}
	return nil
}
