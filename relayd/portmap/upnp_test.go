package portmap

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

const igdDescription = `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><device>
<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>
<deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
<controlURL>%s</controlURL></service></serviceList>
</device></deviceList></device></deviceList></device></root>`

// hostileRouter serves a description at /rootDesc.xml naming control as
// its control URL, and a description that never ends at /huge.xml.
func hostileRouter(t *testing.T, control string) (*httptest.Server, netip.Addr) {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/rootDesc.xml", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, igdDescription, control)
	})
	mux.HandleFunc("/huge.xml", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<root><device><serviceList>`)
		pad := strings.Repeat("<service><serviceType>x</serviceType></service>", 1000)
		for i := 0; i < 1000 && r.Context().Err() == nil; i++ { // 47 MB unless the reader stops
			fmt.Fprint(w, pad)
		}
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv, netip.MustParseAddrPort(srv.Listener.Addr().String()).Addr()
}

func get(t *testing.T, srv *httptest.Server, path string) *url.URL {
	u, err := url.Parse(srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestUPnPRefusesControlURLOffTheGateway is the attack of a LAN host
// posing as the router: a description whose control URL sends relayd's
// SOAP requests to another address (here 127.0.0.2; in a home, another
// host of the LAN or the Internet) is refused, as is one that names the
// gateway by a host name.
func TestUPnPRefusesControlURLOffTheGateway(t *testing.T) {
	for _, control := range []string{"http://127.0.0.2:5000/ctl", "http://localhost:5000/ctl", "https://127.0.0.1/ctl", "//127.0.0.3/ctl"} {
		srv, gw := hostileRouter(t, control)
		_, _, err := controlURL(context.Background(), gatewayHTTP(gw), gw, get(t, srv, "/rootDesc.xml"))
		if !errors.Is(err, errNotGateway) {
			t.Errorf("control URL %s: err %v, want refused", control, err)
		}
	}
	srv, gw := hostileRouter(t, "/ctl/IPConn")
	u, st, err := controlURL(context.Background(), gatewayHTTP(gw), gw, get(t, srv, "/rootDesc.xml"))
	if err != nil || u.String() != srv.URL+"/ctl/IPConn" || st != upnpServices[1] {
		t.Fatalf("a relative control URL on the gateway: %v %s %v", u, st, err)
	}
}

func TestUPnPBoundsReplies(t *testing.T) {
	srv, gw := hostileRouter(t, "/ctl")
	_, _, err := controlURL(context.Background(), gatewayHTTP(gw), gw, get(t, srv, "/huge.xml"))
	if !errors.Is(err, errBodyTooLarge) {
		t.Fatalf("a huge description: %v", err)
	}
	// The client connects to the gateway only, whatever the URL says.
	other := netip.MustParseAddr("127.0.0.9")
	if _, err := gatewayHTTP(other).Get(srv.URL + "/rootDesc.xml"); !errors.Is(err, errNotGateway) {
		t.Fatalf("connected to a host that is not the gateway: %v", err)
	}
}
