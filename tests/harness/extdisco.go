package harness

import (
	"context"
	"fmt"
	"strconv"
)

// ExternalService is one <service/> of a XEP-0215 (urn:xmpp:extdisco:2)
// answer, as the third-party requester read it.
type ExternalService struct {
	Type, Host, Transport string
	Port                  int
	// Username and Password are TURN REST credentials (TURN entries of a
	// relay whose policy admits the requester); Expires is their RFC 3339
	// expiry.
	Username, Password, Expires string
	Restricted                  bool
}

// ExternalServices asks relay (default: the requester's relay) for its
// XEP-0215 services of type typ ("" = every type) and returns them. It
// fails if the relay answers with an error or not with <services/>.
func (r Requester) ExternalServices(ctx context.Context, relay, typ string) ([]ExternalService, error) {
	req := `<services xmlns='urn:xmpp:extdisco:2'/>`
	if typ != "" {
		req = `<services xmlns='urn:xmpp:extdisco:2' type='` + typ + `'/>`
	}
	outs, err := r.Run(ctx, RequestArgs{Relay: relay, Raw: req})
	if err != nil {
		return nil, fmt.Errorf("XEP-0215 services: %w", err)
	}
	if len(outs) != 1 || outs[0].Type != "result" || outs[0].Services == nil { // nil: no <services/> element
		return nil, fmt.Errorf("XEP-0215 services: answered %+v", outs)
	}
	services := make([]ExternalService, 0, len(outs[0].Services))
	for _, a := range outs[0].Services {
		port, err := strconv.Atoi(a["port"])
		if err != nil {
			return nil, fmt.Errorf("XEP-0215 service %v: port: %w", a, err)
		}
		services = append(services, ExternalService{
			Type: a["type"], Host: a["host"], Transport: a["transport"], Port: port,
			Username: a["username"], Password: a["password"], Expires: a["expires"],
			Restricted: a["restricted"] == "1" || a["restricted"] == "true",
		})
	}
	return services, nil
}
