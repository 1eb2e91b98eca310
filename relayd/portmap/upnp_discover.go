package portmap

import (
	"bufio"
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// ssdpWait is how long relayd listens for SSDP answers.
const ssdpWait = 2 * time.Second

// The IGD services relayd can map ports through, preferred first.
var upnpServices = []string{
	"urn:schemas-upnp-org:service:WANIPConnection:2",
	"urn:schemas-upnp-org:service:WANIPConnection:1",
	"urn:schemas-upnp-org:service:WANPPPConnection:1",
}

// ssdpSearch asks the LAN (SSDP M-SEARCH, multicast from local) for an
// Internet gateway device and returns the description URLs announced by
// the gateway itself: answers from other addresses, or naming another
// host, are refused (and counted in refused, for the log).
func ssdpSearch(ctx context.Context, gateway, local netip.Addr) (locations []*url.URL, refused []error, err error) {
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(local, 0)))
	if err != nil {
		return nil, nil, fmt.Errorf("ssdp: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	group := &net.UDPAddr{IP: net.IPv4(239, 255, 255, 250), Port: 1900}
	msg := "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\n" +
		"ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\r\n"
	if _, err := conn.WriteToUDP([]byte(msg), group); err != nil {
		return nil, nil, fmt.Errorf("ssdp: %w", err)
	}
	conn.SetReadDeadline(time.Now().Add(ssdpWait))
	seen := map[string]bool{}
	buf := make([]byte, 2048) // an SSDP answer is one datagram: longer ones are cut and fail to parse
	for len(locations)+len(refused) < 16 {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			break // the deadline: the answers are in
		}
		if from.Addr().Unmap() != gateway {
			refused = append(refused, fmt.Errorf("ssdp answer from %s: %w %s", from.Addr(), errNotGateway, gateway))
			continue
		}
		resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(buf[:n])), nil)
		if err != nil {
			continue
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if seen[loc] {
			continue
		}
		seen[loc] = true
		u, err := gatewayURL(gateway, nil, loc)
		if err != nil {
			refused = append(refused, fmt.Errorf("ssdp location: %w", err))
			continue
		}
		locations = append(locations, u)
	}
	if len(locations) == 0 {
		return nil, refused, errors.Join(append([]error{fmt.Errorf("ssdp: no Internet gateway device answered from %s", gateway)}, refused...)...)
	}
	return locations, refused, nil
}

// deviceDescription is the part of a UPnP device description relayd
// reads: devices, nested, and their services.
type deviceDescription struct {
	URLBase string `xml:"URLBase"`
	Device  device `xml:"device"`
}

type device struct {
	Services []struct {
		Type       string `xml:"serviceType"`
		ControlURL string `xml:"controlURL"`
	} `xml:"serviceList>service"`
	Devices []device `xml:"deviceList>device"`
}

// maxDeviceDepth bounds how deep nested devices are searched (an IGD
// has three levels).
const maxDeviceDepth = 6

// controlURL fetches the description at loc and returns the control URL
// and type of the first port-mapping service it lists, in upnpServices'
// order; a control URL on another host is refused.
func controlURL(ctx context.Context, hc *http.Client, gateway netip.Addr, loc *url.URL) (*url.URL, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc.String(), nil)
	if err != nil {
		return nil, "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, "", fmt.Errorf("upnp description: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("upnp description %s: %s", loc, resp.Status)
	}
	var desc deviceDescription
	if err := xml.NewDecoder(resp.Body).Decode(&desc); err != nil {
		return nil, "", fmt.Errorf("upnp description %s: %w", loc, err)
	}
	base := loc
	if desc.URLBase != "" {
		if base, err = gatewayURL(gateway, nil, desc.URLBase); err != nil {
			return nil, "", fmt.Errorf("upnp description URLBase: %w", err)
		}
	}
	found := map[string]string{}
	collectServices(desc.Device, 0, found)
	for _, st := range upnpServices {
		if raw, ok := found[st]; ok {
			u, err := gatewayURL(gateway, base, raw)
			if err != nil {
				return nil, "", fmt.Errorf("upnp control URL: %w", err)
			}
			return u, st, nil
		}
	}
	return nil, "", fmt.Errorf("upnp description %s: no WANIPConnection or WANPPPConnection service", loc)
}

func collectServices(d device, depth int, found map[string]string) {
	if depth > maxDeviceDepth {
		return
	}
	for _, s := range d.Services {
		st := strings.TrimSpace(s.Type)
		if _, ok := found[st]; !ok {
			found[st] = strings.TrimSpace(s.ControlURL)
		}
	}
	for _, sub := range d.Devices {
		collectServices(sub, depth+1, found)
	}
}
