//go:build nofastpath

package nft

import "errors"

// Table is absent from builds made with -tags nofastpath (the small-flash
// boards' builds, where the nftables client library costs more flash than
// the budget has): Open always fails and relayd relays in userspace.
type Table struct{}

// errNotBuilt is why Open fails in such a build.
var errNotBuilt = errors.New("relayd was built without the nftables fast path (-tags nofastpath); the eBPF one is in every build")

// Open reports that the fast path is not in this build.
func Open(Config) (*Table, error) {
	return nil, &UnavailableError{Reason: "not_built", Err: errNotBuilt}
}

// Apply, Counters, Close and Name exist so callers build either way; a nil
// Table from Open is never used.
func (t *Table) Apply(remove, add []Leg) error { return errNotBuilt }

// Counters has nothing to report.
func (t *Table) Counters() (map[Flow]Counter, error) { return nil, errNotBuilt }

// Close does nothing.
func (t *Table) Close() error { return nil }

// Name is empty.
func (t *Table) Name() string { return "" }
