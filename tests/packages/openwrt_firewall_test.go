package packages

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// firewallRules are the fw4 rules start_service handed procd with the
// instance, one "zone proto port" line each.
func firewallRules(procd string) []string {
	var rules []string
	var rule map[string]string
	for _, l := range strings.Split(procd, "\n") {
		switch {
		case l == "object":
			rule = map[string]string{}
		case l == "end object":
			if rule["type"] != "rule" || rule["target"] != "ACCEPT" || rule["name"] != "jnrelay-"+rule["proto"]+"-"+rule["dest_port"] {
				rules = append(rules, "malformed rule "+strings.Join([]string{rule["type"], rule["target"], rule["name"]}, " "))
			}
			rules = append(rules, rule["src"]+" "+rule["proto"]+" "+rule["dest_port"])
			rule = nil
		case rule != nil && strings.HasPrefix(l, "string "):
			k, v, _ := strings.Cut(strings.TrimPrefix(l, "string "), " ")
			rule[k] = v
		}
	}
	return rules
}

func buildRelayd(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("RELAYD_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(t.TempDir(), "relayd")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/jnrelay/jnrelay/relayd")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build relayd: %v\n%s", err, b)
	}
	return bin
}

// TestOpenWrtInitFirewall: the router's firewall lets callers in from the
// WAN zone to the ports relayd's configuration serves on, as rules of
// relayd's procd instance (gone when it stops), and to nothing else.
func TestOpenWrtInitFirewall(t *testing.T) {
	r := newInitRun(t)
	r.prog = buildRelayd(t)
	config := r.path("etc/jnrelay/relayd.json")
	if _, out, err := r.start(); err != nil { // the first start writes the default configuration
		t.Fatalf("start_service: %v\n%s", err, out)
	}
	write := func(doc string) {
		t.Helper()
		if err := os.WriteFile(config, []byte(doc), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	check := func(name string, want []string, uci ...string) string {
		t.Helper()
		procd, out, err := r.start(uci...)
		if err != nil {
			t.Fatalf("%s: start_service: %v\n%s", name, err, out)
		}
		if got := firewallRules(procd); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s: firewall rules %q, want %q\n%s", name, got, want, procd)
		}
		// relayd's instance: the offload broker's comes first.
		_, relayd, _ := strings.Cut(procd, "open relayd\n")
		if !strings.Contains(relayd, "close\n") || strings.Index(relayd, "data\n") > strings.Index(relayd, "close\n") {
			t.Errorf("%s: the rules are not relayd's instance's own:\n%s", name, procd)
		}
		return out
	}

	write(`{"ports": {"min": 50000, "max": 50999}, "turn": {"builtin": {"enabled": true}}}`)
	check("TURN on", []string{"wan udp 50000-50999", "wan udp 3478", "wan udp 3479", "wan tcp 3479"})
	check("another zone", []string{"wan6 udp 50000-50999", "wan6 udp 3478", "wan6 udp 3479", "wan6 tcp 3479"}, "firewall_zone=wan6")
	if procd, _, _ := r.start("firewall_zone="); strings.Contains(procd, "data\n") {
		t.Errorf("firewall_zone '' still handed fw4 rules:\n%s", procd)
	}
	// STUN on a port relayd cannot bind: not opened.
	write(`{"stun": {"port": 53}}`)
	check("privileged port", []string{"wan udp 40000-40999"})

	// A configuration relayd cannot start with opens nothing.
	write(`{"ports": {"min": 1, "max": 65535}}`)
	if out := check("invalid configuration", nil); !strings.Contains(out, "no firewall rule added") {
		t.Errorf("no word of the invalid configuration: %q", out)
	}

	// relayd, compromised, replaces its configuration with a link to a
	// file of root's: root does not read it for ports.
	secret := r.rootFile("elsewhere/secret.json")
	if err := os.WriteFile(secret, []byte(`{"ports": {"min": 2000, "max": 65535}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	os.Remove(config)
	r.plant("etc/jnrelay/relayd.json", secret)
	if out := check("symbolic link", nil); !strings.Contains(out, "symbolic link") {
		t.Errorf("link followed, or no word of it: %q", out)
	}
	os.Remove(config)
	if err := os.Link(secret, config); err != nil {
		t.Fatal(err)
	}
	if out := check("hard link", nil); !strings.Contains(out, "hard link") {
		t.Errorf("hard link read, or no word of it: %q", out)
	}
}

// TestOpenWrtInitFirewallChecksLines: what -firewall-ports prints is
// checked again before it becomes a rule: a line that is not "udp|tcp
// PORT[-PORT]" with ports 1024-65535 is left out.
func TestOpenWrtInitFirewallChecksLines(t *testing.T) {
	r := newInitRun(t)
	r.prog = filepath.Join(r.base, "share", "fake-relayd")
	fake := "#!/bin/sh\nprintf '%s\\n' 'udp 40000-40999' 'udp 53' 'tcp 1-65535' 'udp 5000-4000' 'udp 70000' 'icmp 5000' 'udp 5000;reboot' 'tcp 5349' 'udp 6000-7000-8000' 'udp -5'\n"
	if err := os.WriteFile(r.prog, []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	procd, out, err := r.start()
	if err != nil {
		t.Fatalf("start_service: %v\n%s", err, out)
	}
	want := []string{"wan udp 40000-40999", "wan tcp 5349"}
	if got := firewallRules(procd); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("firewall rules %q, want %q\n%s", got, want, procd)
	}
}
