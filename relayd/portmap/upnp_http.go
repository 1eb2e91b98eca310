package portmap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"time"
)

// Bounds on what a UPnP "router" may make relayd read or wait for.
const (
	// upnpMaxBody bounds a device description or a SOAP reply: real
	// ones are a few kilobytes.
	upnpMaxBody = 64 << 10
	// upnpMaxHeader bounds an HTTP response's header.
	upnpMaxHeader = 8 << 10
	// upnpTimeout bounds one HTTP exchange, connection included.
	upnpTimeout = 3 * time.Second
)

// errNotGateway refuses a URL or connection to anything but the gateway.
var errNotGateway = errors.New("not the default gateway")

// gatewayURL parses raw (resolved against base when relative) and
// accepts it only when it is plain http to the gateway's own address by
// number: an impostor on the LAN could otherwise send relayd's requests
// anywhere (another host of the LAN, the Internet, a name to resolve).
func gatewayURL(gateway netip.Addr, base *url.URL, raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("url %q: %w", raw, err)
	}
	if base != nil {
		u = base.ResolveReference(u)
	}
	host, err := netip.ParseAddr(u.Hostname())
	if u.Scheme != "http" || err != nil || host.Unmap() != gateway || u.User != nil {
		return nil, fmt.Errorf("url %q: %w %s", raw, errNotGateway, gateway)
	}
	return u, nil
}

// gatewayHTTP is the HTTP client for UPnP: it connects to the gateway's
// address only (whatever a URL says), follows no redirect, uses no
// proxy, and cuts every response body at upnpMaxBody.
func gatewayHTTP(gateway netip.Addr) *http.Client {
	dialer := &net.Dialer{Timeout: upnpTimeout}
	transport := &http.Transport{
		Proxy: nil,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ap, err := netip.ParseAddrPort(addr)
			if err != nil || ap.Addr().Unmap() != gateway {
				return nil, fmt.Errorf("connect %s: %w %s", addr, errNotGateway, gateway)
			}
			return dialer.DialContext(ctx, "tcp4", addr)
		},
		DisableKeepAlives:      true,
		MaxResponseHeaderBytes: upnpMaxHeader,
		ResponseHeaderTimeout:  upnpTimeout,
	}
	return &http.Client{
		Transport: boundedBodies{transport},
		Timeout:   upnpTimeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return errors.New("upnp: redirect refused")
		},
	}
}

// boundedBodies cuts each response body after upnpMaxBody bytes with an
// error, so a decoder reading it stops there.
type boundedBodies struct{ next http.RoundTripper }

func (b boundedBodies) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := b.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{r: resp.Body, left: upnpMaxBody}
	return resp, nil
}

var errBodyTooLarge = fmt.Errorf("upnp: reply larger than %d bytes", upnpMaxBody)

type limitedBody struct {
	r    io.ReadCloser
	left int
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.left <= 0 {
		return 0, errBodyTooLarge
	}
	if len(p) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= n
	return n, err
}

func (l *limitedBody) Close() error { return l.r.Close() }
