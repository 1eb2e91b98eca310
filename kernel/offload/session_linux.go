package offload

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/jnrelay/jnrelay/kernel/nft"
)

// One client's session: its requests, its table, the periodic check of
// its legs.

// session is one client's connection and table.
type session struct {
	b        *Broker
	conn     *net.UnixConn
	uid      uint32
	pid      int32
	receiver func(peer, local netip.AddrPort) (uint32, bool, error)

	mu       sync.Mutex // guards what follows against the recheck
	table    KernelTable
	v        *validator
	maxFlows int
	legs     map[nft.Leg]bool
}

// run reads requests until the client leaves or closes, then removes
// the table.
func (s *session) run() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.recheckLoop(done)
	}()
	defer func() {
		close(done)
		wg.Wait()
		s.closeTable()
	}()
	for {
		b, err := readFrame(s.conn)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.refuse("bad frame", err)
			}
			return
		}
		req, err := DecodeRequest(b)
		if err != nil {
			s.refuse("bad request", err)
			_ = writeFrame(s.conn, Response{V: Version, Err: wireError(err)})
			return
		}
		if !s.handle(req) {
			return
		}
	}
}

func (s *session) refuse(what string, err error) {
	s.b.refused.Add(1)
	s.b.log.Warn("offload broker: "+what+" refused", "uid", s.uid, "pid", s.pid, "err", err.Error())
}

// handle answers req; false ends the session.
func (s *session) handle(req Request) bool {
	switch req.Op {
	case OpOpen:
		name, err := s.open(req)
		return writeFrame(s.conn, Response{V: Version, Name: name, Err: wireError(err)}) == nil
	case OpApply:
		err := s.apply(req.Remove, req.Add)
		return writeFrame(s.conn, Response{V: Version, Err: wireError(err)}) == nil
	case OpCounters:
		return s.counters() == nil
	case OpClose:
		s.closeTable()
		_ = writeFrame(s.conn, Response{V: Version})
		return false
	}
	return false
}

func (s *session) open(req Request) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.table != nil {
		err := fmt.Errorf("a table is open already: %w", ErrRefused)
		s.refuse("open", err)
		return "", err
	}
	if req.MaxFlows > s.b.cfg.MaxFlows {
		err := fmt.Errorf("max_flows %d: at most %d: %w", req.MaxFlows, s.b.cfg.MaxFlows, ErrRefused)
		s.refuse("open", err)
		return "", err
	}
	t, err := s.b.cfg.Open(req.Mode, req.Listen, req.MaxFlows)
	if err != nil {
		return "", err
	}
	s.table, s.maxFlows, s.legs = t, req.MaxFlows, map[nft.Leg]bool{}
	s.v = &validator{uid: s.uid, listen: req.Listen, receiver: s.receiver}
	s.b.log.Info("offload broker: table open", "by", t.Name(), "listen", req.Listen.String(), "max_flows", req.MaxFlows, "uid", s.uid)
	return t.Name(), nil
}

// apply validates every added leg, then installs and removes in one
// call of the table; any refused leg refuses the whole request (relayd's
// fast path then tries leg by leg).
func (s *session) apply(remove, add []nft.Leg) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.table == nil {
		err := fmt.Errorf("apply before open: %w", ErrRefused)
		s.refuse("apply", err)
		return err
	}
	// Legs the broker never installed, or took out itself, are not in
	// the kernel: nothing to remove.
	var rm []nft.Leg
	gone := map[nft.Leg]bool{}
	for _, l := range remove {
		if s.legs[l] && !gone[l] {
			rm, gone[l] = append(rm, l), true
		}
	}
	after := len(s.legs) - len(rm)
	adding := map[nft.Leg]bool{}
	for _, l := range add {
		if !adding[l] && (!s.legs[l] || gone[l]) {
			adding[l] = true
			after++
		}
	}
	if after*2 > s.maxFlows {
		err := fmt.Errorf("%d legs would hold %d flows, more than the %d allowed: %w", after, after*2, s.maxFlows, ErrRefused)
		s.refuse("apply", err)
		return err
	}
	var addrs []netip.Addr
	if len(add) > 0 && s.v.listen.IsUnspecified() {
		var err error
		if addrs, err = s.b.cfg.HostAddrs(); err != nil {
			return err
		}
	}
	for _, l := range add {
		if err := s.v.check(l, addrs); err != nil {
			s.refuse("leg", err)
			return err
		}
	}
	if err := s.table.Apply(rm, add); err != nil {
		return err
	}
	for _, l := range rm {
		delete(s.legs, l)
	}
	for _, l := range add {
		s.legs[l] = true
	}
	return nil
}

// counters sends the table's counters in frames of at most
// maxCountersPerFrame.
func (s *session) counters() error {
	s.mu.Lock()
	var cs map[nft.Flow]nft.Counter
	err := fmt.Errorf("counters before open: %w", ErrRefused)
	if s.table != nil {
		cs, err = s.table.Counters()
	}
	s.mu.Unlock()
	if err != nil {
		return writeFrame(s.conn, Response{V: Version, Err: wireError(err)})
	}
	out := make([]FlowCounter, 0, min(len(cs), maxCountersPerFrame))
	for f, c := range cs {
		out = append(out, FlowCounter{Peer: f.Peer, Port: f.Port, Packets: c.Packets, Bytes: c.Bytes})
		if len(out) == maxCountersPerFrame {
			if err := writeFrame(s.conn, Response{V: Version, Counters: out, More: true}); err != nil {
				return err
			}
			out = out[:0]
		}
	}
	return writeFrame(s.conn, Response{V: Version, Counters: out})
}

// recheckLoop checks the installed legs every Recheck until done.
func (s *session) recheckLoop(done <-chan struct{}) {
	t := time.NewTicker(s.b.cfg.Recheck)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			s.recheck()
		}
	}
}

// recheck takes out of the kernel every leg whose ports the client no
// longer holds: a port it closed may be bound next by another program.
func (s *session) recheck() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.table == nil || len(s.legs) == 0 {
		return
	}
	var addrs []netip.Addr
	if s.v.listen.IsUnspecified() {
		var err error
		if addrs, err = s.b.cfg.HostAddrs(); err != nil {
			s.b.log.Warn("offload broker: recheck skipped", "err", err.Error())
			return
		}
	}
	var stale []nft.Leg
	for l := range s.legs {
		if err := s.v.check(l, addrs); err != nil {
			s.refuse("installed leg", err)
			stale = append(stale, l)
		}
	}
	if len(stale) == 0 {
		return
	}
	if err := s.table.Apply(stale, nil); err != nil {
		s.b.log.Error("offload broker: could not remove legs the client no longer holds; removing the table", "err", err.Error())
		s.closeTableLocked()
		return
	}
	for _, l := range stale {
		delete(s.legs, l)
	}
}

func (s *session) closeTable() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeTableLocked()
}

func (s *session) closeTableLocked() {
	if s.table == nil {
		return
	}
	if err := s.table.Close(); err != nil {
		s.b.log.Error("offload broker: could not remove the table", "by", s.table.Name(), "err", err.Error())
	}
	s.table, s.legs = nil, nil
}
