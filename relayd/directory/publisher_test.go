package directory

import (
	"context"
	"testing"
	"time"

	"mellium.im/xmpp/jid"
)

const testNode = "relays"

func testPublisher(f *fakeService, listed *bool, free *int) *Publisher {
	return NewPublisher(PublisherConfig{
		Nodes: []Node{{Service: jid.MustParse("pubsub.example.org"), Node: testNode}}, Refresh: time.Hour,
		Session: func(Node) Requester { return f },
		Self: func() (Item, bool) {
			return Item{JingleNodes: true, Free: *free, Total: 10, Reachability: "public", Version: "jnrelay test"}, *listed
		},
	})
}

func TestPublisherCreatesPublishesAndRetracts(t *testing.T) {
	f := newFake(t, "relay.example.org") // no node yet
	listed, free := true, 10
	p := testPublisher(f, &listed, &free)
	ctx := context.Background()
	p.step(ctx)
	it, ok := f.stored(testNode, "relay.example.org")
	if !ok {
		t.Fatal("nothing published (node not created?)")
	}
	if it.JID.String() != "relay.example.org" || it.Policy != "public" || it.Status != StatusOK || it.Free != 10 {
		t.Errorf("published %+v", it)
	}
	// A change within a minute of the last publication waits.
	free = 3
	p.step(ctx)
	if it, _ := f.stored(testNode, "relay.example.org"); it.Free != 10 {
		t.Errorf("republished at once on a change: free %d", it.Free)
	}
	// Draining: the item goes.
	listed = false
	p.step(ctx)
	if _, ok := f.stored(testNode, "relay.example.org"); ok {
		t.Error("item still there while draining")
	}
	listed = true
	p.step(ctx)
	if it, ok := f.stored(testNode, "relay.example.org"); !ok || it.Free != 3 {
		t.Errorf("after draining ended: %+v %v", it, ok)
	}
	p.Withdraw(ctx)
	if _, ok := f.stored(testNode, "relay.example.org"); ok {
		t.Error("item still there after Withdraw")
	}
	p.step(ctx)
	if _, ok := f.stored(testNode, "relay.example.org"); ok {
		t.Error("published again after Withdraw")
	}
}

func TestPublisherMarksStoppedWhenRetractionRefused(t *testing.T) {
	f := newFake(t, "relay@example.org/r1", testNode)
	f.forbidRetract = true
	listed, free := true, 10
	p := testPublisher(f, &listed, &free)
	p.step(context.Background())
	p.Withdraw(context.Background())
	it, ok := f.stored(testNode, "relay@example.org/r1")
	if !ok || it.Status != StatusStopped {
		t.Fatalf("after Withdraw: %+v %v, want the item marked stopped", it, ok)
	}
}

func TestPublisherNewAddressReplacesItem(t *testing.T) {
	f := newFake(t, "relay@example.org/r1", testNode)
	listed, free := true, 10
	p := testPublisher(f, &listed, &free)
	p.step(context.Background())
	f.addr = jid.MustParse("relay@example.org/r2") // reconnected
	p.step(context.Background())
	if _, ok := f.stored(testNode, "relay@example.org/r1"); ok {
		t.Error("the old address's item stayed")
	}
	if _, ok := f.stored(testNode, "relay@example.org/r2"); !ok {
		t.Error("the new address's item is missing")
	}
}

func TestPublisherWithoutNodeOrRight(t *testing.T) {
	f := newFake(t, "relay.example.org")
	f.noCreate = true
	listed, free := true, 10
	p := testPublisher(f, &listed, &free)
	p.step(context.Background())
	if _, ok := f.stored(testNode, "relay.example.org"); ok {
		t.Error("published on a node that does not exist")
	}
}
