package nftrace

import (
	"fmt"
	"strings"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// MarkerPrefix starts the names of skbtrail's marking tables.
const MarkerPrefix = "skbtrail_trace_"

// Tracing is one namespace's nftrace for a trace: the marking table and
// the trace event subscription, on one netlink socket (closing it removes
// the table and ends the subscription).
type Tracing struct {
	*Listener
	Table string
}

// Start readies nftrace in the network namespace netnsFD refers to (0: the
// calling thread's), on a single socket: it lists the namespace's tables,
// and when there are some besides skbtrail's own, creates the marking
// table for m and subscribes to the trace events. nil, nil: the namespace
// has no nf_tables tables, so nothing to trace there.
func Start(netnsFD int, m Match) (*Tracing, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netnsFD})
	if err != nil {
		return nil, fmt.Errorf("netfilter netlink socket: %w", err)
	}
	names, err := tableNames(c)
	if err != nil {
		c.Close()
		return nil, err
	}
	if !hasOtherTables(names) {
		c.Close()
		return nil, nil
	}
	mk := &Marker{conn: c, Table: fmt.Sprintf("%s%d_%d", MarkerPrefix, unix.Getpid(), tableSeq.Add(1))}
	msgs, err := mk.batch(m)
	if err == nil {
		err = sendBatch(c, msgs)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("add nftrace marking table inet %s: %w", mk.Table, err)
	}
	// subscribed after the batch's answer: no event is read as an answer
	if err := c.JoinGroup(unix.NFNLGRP_NFTRACE); err != nil {
		c.Close()
		return nil, fmt.Errorf("join the nftrace group: %w", err)
	}
	return &Tracing{Listener: listen(c), Table: mk.Table}, nil
}

// tableNames lists the namespace's nf_tables tables (every family).
func tableNames(c *netlink.Conn) ([]string, error) {
	req := netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETTABLE), Flags: netlink.Request | netlink.Dump},
		Data:   []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, 0},
	}
	replies, err := c.Execute(req)
	if err != nil {
		return nil, fmt.Errorf("list nf_tables tables: %w", err)
	}
	var names []string
	for _, r := range replies {
		if len(r.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(r.Data[4:])
		if err != nil {
			return nil, fmt.Errorf("list nf_tables tables: %w", err)
		}
		for ad.Next() {
			if ad.Type() == unix.NFTA_TABLE_NAME {
				names = append(names, ad.String())
			}
		}
	}
	return names, nil
}

func hasOtherTables(names []string) bool {
	for _, n := range names {
		if !strings.HasPrefix(n, MarkerPrefix) {
			return true
		}
	}
	return false
}
