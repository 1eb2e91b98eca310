//go:build !nofastpath

package nft

// OpenNATOnly opens the flowtable variant without its flowtable: the
// conntrack NAT, zone and counters alone, which the tests check on
// kernels without nf_flow_table (the flowtable itself is checked in the
// arm64 image, tests/image).
func OpenNATOnly(cfg Config) (*Table, error) {
	cfg.Flowtable, cfg.noFlowtable = true, true
	return Open(cfg)
}

// OpenIgnoringBrNetfilter opens the table although br_netfilter would
// bridge what it rewrites (CheckBrNetfilter), to show what is lost;
// natOnly opens the flowtable variant without its flowtable.
func OpenIgnoringBrNetfilter(cfg Config, natOnly bool) (*Table, error) {
	cfg.ignoreBrNetfilter = true
	cfg.Flowtable, cfg.noFlowtable = natOnly, natOnly
	return Open(cfg)
}
