// Package harness is the end-to-end test harness of jnrelay.
//
// It provides:
//   - LAN: a star of network namespaces joined by a bridge (203.0.113.0/24),
//     built with iproute2, plus helpers to open sockets inside a namespace
//     from the test process (RunInNetns, LAN.ListenUDP);
//   - XMPPServer: private Prosody 0.12 and ejabberd 23.01 instances with a
//     XEP-0114 component listener, startable/killable/restartable
//     (StartProsody, StartEjabberd);
//   - Requester: a third-party Jingle Nodes (XEP-0278) requester built on
//     python3-slixmpp (requester.py, embedded);
//   - Endpoint: RTP/RTCP media endpoints that send tagged, timestamped
//     packets and collect per-source statistics.
//
// Everything only talks to loopback or to addresses inside namespaces the
// test created, and every process the harness starts is stopped by PID.
// Most pieces need root (namespaces, servers); use RequireRoot.
// System dependencies are installed by tests/deps.sh.
package harness
