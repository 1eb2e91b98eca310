package portmap

import (
	"encoding/binary"
	"net/netip"
	"strings"
	"testing"
)

func TestParseDefaultRoute(t *testing.T) {
	// /proc/net/route prints each address as the native-order uint32 the
	// kernel holds; this table is what a little-endian host prints.
	table := `Iface	Destination	Gateway 	Flags	RefCnt	Use	Metric	Mask		MTU	Window	IRTT
eth0	004DA8C0	00000000	0001	0	0	0	00FFFFFF	0	0	0
wg0	00000000	00000000	0001	0	0	0	00000000	0	0	0
eth0	00000000	014DA8C0	0003	0	0	0	00000000	0	0	0
`
	want := "192.168.77.1"
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		table = strings.ReplaceAll(table, "014DA8C0", "C0A84D01") // a big-endian host
	}
	gw, err := parseDefaultRoute(strings.NewReader(table))
	if err != nil || gw != netip.MustParseAddr(want) {
		t.Fatalf("gateway %v %v, want %s (the device route and the default route without a gateway skipped)", gw, err, want)
	}
	if _, err := parseDefaultRoute(strings.NewReader("Iface\tDestination\n")); err == nil {
		t.Fatal("a table without a default route gave a gateway")
	}
}
