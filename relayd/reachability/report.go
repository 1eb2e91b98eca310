package reachability

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// suitableServer is the advice when the servers cannot answer from a
// second address.
const suitableServer = "set reachability.stun_servers to a STUN server that answers from a second address (RFC 5780, or RFC 3489 CHANGE-REQUEST, as Debian's stun-server does)"

// noServerReport is the report when no STUN server is configured.
func noServerReport() Report {
	return Report{Verdict: CannotTell, RelayPorts: CannotTell,
		Summary: "Cannot tell whether the Internet can reach this relay: no STUN server to check with is configured.",
		Advice:  capitalize(suitableServer) + "."}
}

// report turns the ports' verdicts against server (reached at at) into
// the Report, with its summary and advice in plain words.
func (c *Checker) report(results []PortResult, server string, at netip.AddrPort) Report {
	r := Report{Server: server, Ports: results}
	if at.IsValid() {
		r.ServerAddress = at.String()
	}
	var relay, stunPort []Verdict
	for _, p := range results {
		switch p.Kind {
		case KindRelay:
			relay = append(relay, p.Verdict)
		case KindSTUN:
			stunPort = append(stunPort, p.Verdict)
		}
	}
	r.Verdict, r.RelayPorts = combine(verdicts(results)), combine(relay)
	if len(stunPort) > 0 {
		r.STUN = combine(stunPort)
	}
	forwardTo := "this device"
	if at.IsValid() {
		if d := deviceAddr(at); d.IsValid() {
			forwardTo += " (" + d.String() + ")"
		}
	}
	switch r.Verdict {
	case Reachable:
		r.Summary = "Reachable: the Internet can reach " + portList(results, Reachable) + "."
	case NotReachable:
		r.Summary = "Not reachable: datagrams from the Internet do not reach " + portList(results, NotReachable) +
			": the router or a firewall drops them, so calls through this relay fail."
		if ok := portList(results, Reachable); ok != "" {
			r.Summary += " " + capitalize(ok) + " can be reached: the router forwards only some of the ports."
		}
		r.Advice = fmt.Sprintf("Forward %s on the router to %s, or turn on automatic port mapping (UPnP IGD, NAT-PMP or PCP) on the router; let the same ports through any firewall.",
			c.cfg.Forward, forwardTo)
	default:
		first := firstCannotTell(results)
		r.Summary = "Cannot tell whether the Internet can reach this relay: " + first.Why + "."
		switch first.cause {
		case causeNoSecondAddress:
			r.Advice = capitalize(suitableServer) + "."
		case causeNoAnswer:
			r.Advice = "Check that the STUN server is up and that this device may reach it, or " + suitableServer + "."
		case causePortChanged:
			r.Advice = fmt.Sprintf("The router changes the relay's ports on the way out: forward %s on the router to %s, so they stay the same.", c.cfg.Forward, forwardTo)
		default:
			r.Advice = "See the log for what failed; the check runs again on its own."
		}
	}
	return r
}

// portList names the ports with verdict v: "ports 40000 and 40996 (relay)
// and port 3478 (STUN)".
func portList(results []PortResult, v Verdict) string {
	var parts []string
	for _, kind := range []Kind{KindRelay, KindSTUN} {
		var ports []string
		for _, p := range results {
			if p.Kind == kind && p.Verdict == v && p.Port != 0 {
				ports = append(ports, strconv.Itoa(p.Port))
			}
		}
		if len(ports) == 0 {
			continue
		}
		word := "port "
		if len(ports) > 1 {
			word = "ports "
		}
		what := " (relay)"
		if kind == KindSTUN {
			what = " (STUN)"
		}
		parts = append(parts, word+joinAnd(ports)+what)
	}
	return joinAnd(parts)
}

func joinAnd(s []string) string {
	if len(s) <= 1 {
		return strings.Join(s, "")
	}
	return strings.Join(s[:len(s)-1], ", ") + " and " + s[len(s)-1]
}

func firstCannotTell(results []PortResult) PortResult {
	for _, p := range results {
		if p.Verdict == CannotTell {
			return p
		}
	}
	return PortResult{Why: "nothing was checked", cause: causeLocal}
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
