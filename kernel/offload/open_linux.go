package offload

import (
	"net/netip"

	"github.com/jnrelay/jnrelay/kernel/nft"
	"github.com/jnrelay/jnrelay/kernel/tcfwd"
)

// openEBPF and openNftables return a nil KernelTable, not a typed nil, on
// failure.

func openEBPF(listen netip.Addr, maxFlows int) (KernelTable, error) {
	f, err := tcfwd.Open(tcfwd.Config{Listen: listen, MaxFlows: maxFlows})
	if err != nil {
		return nil, err
	}
	return f, nil
}

func openNftables(listen netip.Addr, flowtable bool) (KernelTable, error) {
	t, err := nft.Open(nft.Config{Listen: listen, Flowtable: flowtable})
	if err != nil {
		return nil, err
	}
	return t, nil
}
