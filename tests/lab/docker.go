package lab

import (
	"context"
	"fmt"
)

// dockerFilterRules are the filter table rules dockerd (before v28, bridge
// network docker0, no published ports) writes when it starts: its chains,
// jumps from FORWARD, and FORWARD's policy set to DROP. The device docker0
// need not exist for the rules to load.
var dockerFilterRules = [][]string{
	{"-N", "DOCKER"},
	{"-N", "DOCKER-ISOLATION-STAGE-1"},
	{"-N", "DOCKER-ISOLATION-STAGE-2"},
	{"-N", "DOCKER-USER"},
	{"-P", "FORWARD", "DROP"},
	{"-A", "FORWARD", "-j", "DOCKER-USER"},
	{"-A", "FORWARD", "-j", "DOCKER-ISOLATION-STAGE-1"},
	{"-A", "FORWARD", "-o", "docker0", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"},
	{"-A", "FORWARD", "-o", "docker0", "-j", "DOCKER"},
	{"-A", "FORWARD", "-i", "docker0", "!", "-o", "docker0", "-j", "ACCEPT"},
	{"-A", "FORWARD", "-i", "docker0", "-o", "docker0", "-j", "ACCEPT"},
	{"-A", "DOCKER-ISOLATION-STAGE-1", "-i", "docker0", "!", "-o", "docker0", "-j", "DOCKER-ISOLATION-STAGE-2"},
	{"-A", "DOCKER-ISOLATION-STAGE-1", "-j", "RETURN"},
	{"-A", "DOCKER-ISOLATION-STAGE-2", "-o", "docker0", "-j", "DROP"},
	{"-A", "DOCKER-ISOLATION-STAGE-2", "-j", "RETURN"},
	{"-A", "DOCKER-USER", "-j", "RETURN"},
}

// dockerForwardDrop programs Docker's filter rules in ns (seed 002 as it
// happens: dockerd started on a flannel node sets FORWARD's policy to
// DROP); ipv6: the same in ip6tables, as dockerd writes them with IPv6
// filtering on ("ip6tables": true, the default since Docker 27).
func (l *Lab) dockerForwardDrop(ctx context.Context, ns string, ipv6 bool) error {
	run := l.ipt
	if ipv6 {
		run = l.ip6t
	}
	for _, r := range dockerFilterRules {
		if err := run(ctx, ns, append([]string{"-t", "filter"}, r...)...); err != nil {
			return fmt.Errorf("docker filter rules: %w", err)
		}
	}
	return nil
}
