package channel

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

	"github.com/jnrelay/jnrelay/kernel/nft"
	"github.com/jnrelay/jnrelay/kernel/offload"
	"github.com/jnrelay/jnrelay/kernel/tcfwd"
)

// Opening the fast path's table: through the offload broker when one is
// configured (relayd then needs no capability), else — or when the
// broker cannot — by relayd itself, which needs CAP_BPF and
// CAP_NET_ADMIN.

// tableOpener opens the two kinds of kernel table one way.
type tableOpener struct {
	via       string // names the way in logs
	brokered  bool   // through the offload broker: its table can go away
	ebpf      func(listen netip.Addr, maxFlows int) (kernelTable, error)
	nftables  func(listen netip.Addr, maxFlows int) (kernelTable, error)
	flowtable func(listen netip.Addr, maxFlows int) (kernelTable, error)
}

// openers are the ways to try, in order: the broker at offloadSocket
// (when set), then relayd's own.
func openers(offloadSocket string) []tableOpener {
	own := tableOpener{via: "relayd",
		ebpf: func(listen netip.Addr, maxFlows int) (kernelTable, error) {
			f, err := tcfwd.Open(tcfwd.Config{Listen: listen, MaxFlows: maxFlows})
			if err != nil {
				return nil, err
			}
			return f, nil
		},
		nftables: func(listen netip.Addr, _ int) (kernelTable, error) {
			t, err := nft.Open(nft.Config{Listen: listen})
			if err != nil {
				return nil, err
			}
			return t, nil
		},
		flowtable: func(listen netip.Addr, _ int) (kernelTable, error) {
			t, err := nft.Open(nft.Config{Listen: listen, Flowtable: true})
			if err != nil {
				return nil, err
			}
			return t, nil
		}}
	if offloadSocket == "" {
		return []tableOpener{own}
	}
	viaBroker := func(mode string) func(netip.Addr, int) (kernelTable, error) {
		return func(listen netip.Addr, maxFlows int) (kernelTable, error) {
			t, err := offload.Open(context.Background(), offloadSocket, mode, listen, maxFlows)
			if err != nil {
				return nil, err
			}
			return t, nil
		}
	}
	broker := tableOpener{via: "offload broker", brokered: true, ebpf: viaBroker(offload.ModeEBPF), nftables: viaBroker(offload.ModeNftables),
		flowtable: viaBroker(offload.ModeFlowtable)}
	return []tableOpener{broker, own}
}

// open opens the table mode asks for: for auto, eBPF, else the
// flowtable, else the stateless nftables rules, the last two only where
// there is a socket per port. capacity is how many flows it holds (0: no
// fixed bound).
func (o tableOpener) open(sh *shared, mode FastPathMode, maxFlows int, socketPerPort bool) (t kernelTable, capacity int, err error) {
	switch mode {
	case FastPathNftables:
		t, err = o.nftables(sh.listen, maxFlows)
		return t, 0, err
	case FastPathFlowtable:
		t, err = o.flowtable(sh.listen, maxFlows)
		return t, 0, err
	}
	t, err = o.ebpf(sh.listen, maxFlows)
	if err == nil {
		return t, maxFlows, nil
	}
	if mode == FastPathEBPF || !socketPerPort {
		return nil, 0, fmt.Errorf("ebpf: %w", err)
	}
	t, ferr := o.flowtable(sh.listen, maxFlows)
	if ferr == nil {
		sh.log.Info("eBPF fast path unavailable, using the nftables flowtable", "via", o.via, "err", err.Error())
		return t, 0, nil
	}
	t, nerr := o.nftables(sh.listen, maxFlows)
	if nerr != nil {
		return nil, 0, errors.Join(fmt.Errorf("ebpf: %w", err), fmt.Errorf("flowtable: %w", ferr), fmt.Errorf("nftables: %w", nerr))
	}
	sh.log.Info("eBPF and flowtable fast paths unavailable, using nftables", "via", o.via, "ebpf", err.Error(), "flowtable", ferr.Error())
	return t, 0, nil
}

// isNftables says whether mode needs kernel/nft (a socket per port).
func (m FastPathMode) isNftables() bool { return m == FastPathNftables || m == FastPathFlowtable }

// openFastPath opens the table for mode, sized for maxFlows flows, and
// counts into counts. It returns nil and no error when mode is off, or
// auto and the host cannot run it (logged once, with the reasons). Without
// a socket per port only eBPF can serve: the nftables rules match on the
// port's socket.
func openFastPath(sh *shared, counts *fastPathCounts, mode FastPathMode, maxFlows int, socketPerPort bool) (*fastPath, error) {
	switch mode {
	case "", FastPathOff:
		return nil, nil
	case FastPathAuto, FastPathEBPF:
	case FastPathNftables, FastPathFlowtable:
		if !socketPerPort {
			return nil, errSteeredFastPath
		}
	default:
		return nil, fmt.Errorf("fast path mode %q: want off, auto, ebpf, flowtable or nftables", mode)
	}
	var failed []error
	var why []any
	for _, o := range sh.openers {
		t, capacity, err := o.open(sh, mode, maxFlows, socketPerPort)
		if err != nil {
			failed = append(failed, fmt.Errorf("%s: %w", o.via, err))
			why = append(why, o.via, err.Error())
			continue
		}
		if len(failed) > 0 {
			sh.log.Info("in-kernel fast path opened by "+o.via+" after another way failed", why...)
		}
		sh.log.Info("in-kernel fast path on: latched legs are forwarded by the kernel", "by", t.Name())
		var reopen func() (kernelTable, error)
		if o.brokered {
			reopen = func() (kernelTable, error) {
				t, _, err := o.open(sh, mode, maxFlows, socketPerPort)
				return t, err
			}
		}
		return newFastPath(sh, counts, t, capacity, reopen), nil
	}
	if mode != FastPathAuto {
		return nil, fmt.Errorf("fast path: %w", errors.Join(failed...))
	}
	sh.log.Info("in-kernel fast path unavailable, relaying in userspace", why...)
	return nil, nil
}
