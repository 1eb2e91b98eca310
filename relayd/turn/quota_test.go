package turn

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
	"mellium.im/xmpp/jid"

	"github.com/jnrelay/jnrelay/relayd/admission"
)

// allocateCode is the STUN error code of r's Allocate for id (0: it
// allocated).
func allocateCode(t *testing.T, r *testRelay, id string) int {
	t.Helper()
	_, err := r.client(t, id, time.Hour).Allocate()
	if err == nil {
		return 0
	}
	var te *stun.TurnError
	if !errors.As(err, &te) {
		t.Fatalf("allocate %s: %v, want a STUN error response", id, err)
	}
	return int(te.ErrorCodeAttr.Code)
}

// A requester the admission gate refuses gets 486 Allocation Quota
// Reached (RFC 8656), whichever limit it is; nothing is reserved.
func TestAdmissionRefusalAnswers486(t *testing.T) {
	r := newTestRelay(t, netip.Addr{})
	alice := jid.MustParse("alice@example.org")
	for _, id := range []string{"a1", "a2"} {
		r.reqs.Record(id, alice, time.Now().Add(time.Hour))
	}
	r.gate.SetLimits(admission.Limits{RequesterChannels: 1})
	if code := allocateCode(t, r, "a1"); code != 0 {
		t.Fatalf("first allocation: error %d", code)
	}
	// Another credential minted for the same requester: over its limit.
	if code := allocateCode(t, r, "a2"); code != int(stun.CodeAllocQuotaReached) {
		t.Fatalf("requester over its limit: error %d, want 486", code)
	}
	r.gate.SetLimits(admission.Limits{MaxChannels: 1})
	if code := allocateCode(t, r, "b"); code != int(stun.CodeAllocQuotaReached) {
		t.Fatalf("relay at max_channels: error %d, want 486", code)
	}
	if st := r.srv.Stats(); st.Refused[RefusedAdmission] != 2 || st.Refused[RefusedPool] != 0 || r.gate.Held() != 1 {
		t.Fatalf("refusals %v, gate holds %d; want 2 admission refusals and the one allocation", st.Refused, r.gate.Held())
	}
}

// A full port pool is not a quota: 508 Insufficient Capacity.
func TestFullPoolAnswers508(t *testing.T) {
	r := newTestRelay(t, netip.Addr{})
	for range 200 { // the pool has 100 ports; a channel takes at least one
		if _, err := r.dp.Allocate(); err != nil {
			break
		}
	}
	if _, err := r.dp.OpenRelayPort("udp4"); err == nil {
		t.Fatal("the pool still has a relay port")
	}
	if code := allocateCode(t, r, "late"); code != int(stun.CodeInsufficientCapacity) {
		t.Fatalf("full pool: error %d, want 508", code)
	}
	if st := r.srv.Stats(); st.Refused[RefusedPool] != 1 || st.Refused[RefusedAdmission] != 0 || r.gate.Held() != 0 {
		t.Fatalf("refusals %v, gate holds %d; want 1 pool refusal, nothing held", st.Refused, r.gate.Held())
	}
}
