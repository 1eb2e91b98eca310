package turn

import (
	"net"

	"github.com/jnrelay/jnrelay/relayd/admission"
)

// quota is pion's QuotaHandler, asked before it opens an allocation: a
// requester the admission gate would refuse (its own or its domain's
// limits, max_channels, a used-up data quota, a drain) gets 486
// Allocation Quota Reached, as RFC 8656 asks, rather than the 508
// Insufficient Capacity of a failure inside allocate. The gate only
// checks here; allocate reserves. Another request may take the last slot
// in between: that one is refused by allocate's Reserve and answered 508.
func (s *Server) quota(userID, _ string, _ net.Addr) bool {
	requester := s.cfg.Requesters.requesterFor(userID)
	if err := s.cfg.Gate.Check(admission.Request{Requester: requester}); err != nil {
		s.stats.refuse(RefusedAdmission)
		s.log.Info("TURN allocation refused", "requester", requester.String(), "err", err)
		return false
	}
	return true
}
