package packages

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/jnrelay/jnrelay/kernel/nft"
)

// fw4Forward is the .ipk's fw4 include for the forward chain.
const fw4Forward = "usr/share/nftables.d/chain-pre/forward/30-jnrelay.nft"

// checkFw4Forward: the include names relayd's conntrack zone and is valid
// nftables inside a forward chain, as fw4 includes it (a broken include
// would break the router's whole firewall). The syntax check needs nft and
// root; without them only the zone is checked.
func checkFw4Forward(t *testing.T, name string, body []byte) {
	t.Helper()
	if !strings.Contains(string(body), "ct zone "+strconv.Itoa(nft.DefaultZone)+" accept") {
		t.Errorf("%s: %s does not accept conntrack zone %d:\n%s", name, fw4Forward, nft.DefaultZone, body)
	}
	nftBin, err := exec.LookPath("nft")
	if err != nil || os.Geteuid() != 0 {
		return
	}
	ruleset := "table inet jnrelay_fw4_check {\n chain forward {\n  type filter hook forward priority filter; policy drop;\n" + string(body) + "\n }\n}\n"
	cmd := exec.Command(nftBin, "-c", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("%s: %s is not valid in a forward chain: %v\n%s", name, fw4Forward, err, out)
	}
}
