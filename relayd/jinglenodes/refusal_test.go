package jinglenodes

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"mellium.im/xmpp/stanza"

	"github.com/jnrelay/jnrelay/relayd/admission"
	"github.com/jnrelay/jnrelay/relayd/channel"
)

// Every reason the admission gate gives has its own answer: none falls
// through to the unknown-refusal default.
func TestEveryAdmissionReasonIsAnswered(t *testing.T) {
	unknown := admissionRefusal(&admission.Refusal{})
	for r := admission.Denied; r <= admission.DomainShare; r++ {
		if got := admissionRefusal(&admission.Refusal{Reason: r}); got == unknown {
			t.Errorf("admission reason %s has no answer", r)
		}
	}
}

func TestAllocationRefusals(t *testing.T) {
	for _, c := range []struct {
		err     error
		counter Refusal
		cond    stanza.Condition
		text    string
	}{
		{fmt.Errorf("allocate: %w", channel.ErrPoolExhausted), RefusedResourceConstraint, stanza.ResourceConstraint, "no free relay ports"},
		{fmt.Errorf("socket: %w", syscall.ENFILE), RefusedResourceConstraint, stanza.ResourceConstraint, "the relay is out of sockets or memory"},
		{channel.ErrDraining, RefusedUnavailable, stanza.ServiceUnavailable, "relay is shutting down"},
		{errors.New("bind: address in use"), RefusedInternal, stanza.InternalServerError, "could not open relay ports"},
	} {
		got := allocationRefusal(c.err)
		if got.counter != c.counter || got.cond != c.cond || got.text != c.text {
			t.Errorf("%v: %s/%s %q, want %s/%s %q", c.err, got.counter, got.cond, got.text, c.counter, c.cond, c.text)
		}
	}
}

// max_channels counts reservations: with one slot, the second request is
// refused with resource-constraint before any allocation, and the slot
// comes back when the channel ends.
func TestRelayFull(t *testing.T) {
	alloc := &fakeAllocator{left: 5}
	svc, h, _ := newTestService(alloc)
	svc.gate.SetLimits(admission.Limits{MaxChannels: 1})
	ask := func(from string) (reply, string) {
		return handle(t, h, `<iq type='get' id='c' from='`+from+`' to='relay.example.org'><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`)
	}
	r, raw := ask("alice@example.net/a")
	if r.Type != "result" {
		t.Fatalf("first channel: %s", raw)
	}
	id, _ := r.Inner[0].attr("id")
	r, raw = ask("bob@example.org/b")
	if r.Type != "error" || r.Error.Type != "wait" || r.Error.condition() != "resource-constraint" || !strings.Contains(raw, "maximum of 1 calls") {
		t.Fatalf("over max_channels: %s", raw)
	}
	if alloc.calls != 1 {
		t.Fatalf("%d allocations, want 1", alloc.calls)
	}
	svc.ChannelEnded(t.Context(), channel.End{Info: channel.Info{ID: id}})
	if r, raw := ask("bob@example.org/b"); r.Type != "result" {
		t.Fatalf("after the channel ended: %s", raw)
	}
	if got := svc.Stats().Refused["resource_constraint"]; got != 1 {
		t.Fatalf("resource_constraint refusals %d, want 1", got)
	}
}
