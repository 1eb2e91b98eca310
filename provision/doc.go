// Package provision is relayd's provisioning API: the configuration file
// on disk (Store), the HTTP API that reads and changes it live (API), and
// the client the relayd CLI uses (Client).
//
// # Endpoints
//
//	GET    /v1/status           the daemon's status document
//	GET    /v1/config           the configuration, secrets redacted; ETag header
//	PUT    /v1/config           replace the whole document        (write role)
//	PATCH  /v1/config           RFC 7386 JSON merge patch          (write role)
//	GET    /v1/channels         live channels and TURN allocations, one array ("kind")
//	GET    /v1/usage            bytes relayed and calls served per day (31) and month (13),
//	                            most calls live per minute of the last hour
//	DELETE /v1/channels/{id}    end a channel or allocation: 204, or 404 (write role)
//	GET    /v1/logs?n=200       recent log lines {"lines": [...]}, newest last (n 1-10000)
//	POST   /v1/token/rotate     new bearer token {"token": "..."}  (write role)
//	GET    /v1/claim            {"claimed": bool}                  (TCP, no authentication)
//	POST   /v1/claim            claim a fresh relay: {"claimed": true, "token": "..."} once,
//	                            409 already_claimed after            (TCP, no authentication)
//	GET    /                    the donor web page                 (no authentication)
//	GET    /static/{file}       its script, style sheet and icon   (no authentication)
//
// # Web page
//
// The page (web/, embedded in the binary; plain HTML, CSS and JavaScript
// with no build step and nothing loaded from elsewhere) shows the status
// live (polling /v1/status and /v1/channels every 2 s, with a button
// ending a channel or TURN allocation), charts of /v1/usage (fetched
// again every 30 s, or at the next poll when the status shows more than
// they do; drawn as inline SVG by static/charts.js, each with a title, a
// description and a table) and a setup form for the XMPP service, the bandwidth
// cap and the port range, sent as a merge patch with If-Match, each
// field error shown next to its input. Its files hold no data and change
// nothing, so they are served to anyone whose Host passes the check
// below, even on a cross-site navigation (a link from the router's page);
// the page asks for the bearer token, keeps it in sessionStorage (the
// tab only) and sends it with every API call, which the checks below
// guard as usual. It is meant for the TCP listener: open
// http://<listen address>/ and enter the token from
// <StateDir>/api-token.
//
// # Changing the configuration
//
// PUT takes a whole document (missing keys take their defaults), PATCH a
// merge patch over the current document (null removes a key, so it takes
// its default; arrays are replaced whole). Content-Type must be
// application/json (PATCH: application/merge-patch+json or
// application/json) and the body at most 64 KiB (413). Writers are
// serialised; each one:
//
//  1. checks If-Match, when sent, against the current ETag (the quoted
//     SHA-256 of the file's bytes) — a stale one is 412;
//  2. decodes strictly: unknown keys and wrong types are 400 naming the
//     key ("xmpp[0].secrett: unknown key");
//  3. on the TCP listener, refuses (403 files_local_only, fields naming
//     the keys) a document that names a file (xmpp[].secret_file,
//     password_file, ca_file, turn.secret_file, turn.builtin.cert_file and
//     key_file) the current configuration does not name at the same
//     place, or that keeps a secret file for a
//     service whose server, JID, domain or ca_file changed: the token may
//     belong to whoever claimed the page first and crosses the LAN in
//     plain HTTP, so only the unix socket's root or admin user chooses
//     files (which must still follow config.ReadFile's rule);
//  4. puts secrets back: the documents the API hands out carry
//     Placeholder ("********") instead of xmpp[].secret, xmpp[].password
//     and turn.secret; a document sent back with the placeholder keeps
//     the current secret (xmpp entries matched by service name, and only
//     while their type, server, JID, domain and ca_file are unchanged:
//     otherwise 400, send the secret itself), so a client can GET, edit
//     and PUT without ever knowing a secret, and never send it elsewhere;
//  5. validates with config.Validate: every problem is listed (400);
//  6. does nothing more if the result equals the current configuration
//     (200, same ETag: no reconnection, no flash write);
//  7. calls Daemon.Apply: on failure (409 apply_failed, or the status the
//     daemon chose) the daemon has kept its previous configuration and
//     nothing is saved;
//  8. saves atomically (Store.Save) and answers 200 with the new
//     (redacted) document and ETag. If saving fails the previous
//     configuration is applied again (500 persist_failed).
//
// # Store
//
// Save writes a temporary file in the file's directory, fsyncs it, renames
// it over the file and fsyncs the directory, so the path always holds a
// complete old or new document, even across a power cut. Before the
// replacement the previous file, if valid, becomes <path>.last-good. A
// document that config.ParseAt would refuse is never written, and an
// unchanged configuration is not rewritten. The file and its last-good
// copy are written 0600, or 0640 when the old file was group-readable,
// whatever wider mode they had: they hold secrets.
//
// # Authentication and browser safety
//
// The same handler serves two kinds of listener:
//
//   - the unix socket (ListenUnix creates it 0660, or systemd passes it):
//     the caller is identified by SO_PEERCRED (and SO_PEERGROUPS for
//     supplementary groups). uid 0 and APIOptions.AdminUID may do
//     everything; members of APIOptions.AdminGID may only GET; anyone
//     else gets 403.
//   - the optional TCP listener (APIOptions.TCP, off by default): every
//     request needs "Authorization: Bearer <token>" (401 otherwise). The
//     token, 32 random bytes in base64url, is created on first start in
//     <StateDir>/api-token (mode 0600), compared in constant time, and
//     replaced by POST /v1/token/rotate; the old one is refused at once.
//     Connections from outside the local networks (anything but private,
//     link-local and loopback addresses) are closed unanswered. A relay
//     nobody has claimed (no <StateDir>/api-claimed) gives a new token to
//     the first POST /v1/claim: a donor's first visit to the page of a
//     freshly flashed device, which has no console to read the token
//     file from. Using the token ends claiming too.
//
// Every request, before authentication: a Host that is not localhost,
// 127.0.0.1, ::1, the TCP listen address, the IP address the TCP
// connection came in on (a browser pointed at http://192.168.1.2:8787/
// of a listener on 0.0.0.0) or one of APIOptions.Hosts is 421 (DNS
// rebinding: such a page sends its own name); for the API, an Origin or
// Referer naming another host, or Sec-Fetch-Site: cross-site, is 403. Every answer carries
// Content-Security-Policy (default-src 'self'; frame-ancestors 'none'),
// X-Content-Type-Options: nosniff, Referrer-Policy: no-referrer,
// X-Frame-Options: DENY and Cache-Control: no-store. A refused caller
// changes nothing.
//
// # Errors
//
// Every error answer is JSON with a status code:
//
//	{"code": "invalid_config",
//	 "message": "invalid configuration: ports.min: 80 is outside 1024-65535",
//	 "fields": [{"field": "ports.min", "message": "80 is outside 1024-65535"}]}
//
// code is one of the Code* constants (machine-readable), message is for
// people, fields (only for configuration problems, and ?n= of logs) name
// each key in the document's own notation. Unknown paths are 404
// not_found, wrong methods 405 with an Allow header. The Client returns
// these as *Error.
package provision
