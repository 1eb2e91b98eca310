package channel

import (
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
)

// ErrPoolExhausted is returned by Allocate when no block of four free ports
// is left in the configured range.
var ErrPoolExhausted = errors.New("relay port pool exhausted")

// portsPerChannel is the number of consecutive ports a channel occupies.
const portsPerChannel = 4

// portPool hands out blocks of four consecutive ports starting at an even
// port inside [min, max]. Blocks are chosen at random among the free ones so
// the next channel's ports cannot be predicted from the last one's.
type portPool struct {
	mu    sync.Mutex
	first int    // first port of block 0 (even)
	used  []bool // per block
	free  int
}

func newPortPool(min, max int) (*portPool, error) {
	first := min + min%2
	if min < 1 || max > 65535 || first+portsPerChannel-1 > max {
		return nil, fmt.Errorf("port range %d-%d holds no block of %d ports starting at an even port", min, max, portsPerChannel)
	}
	n := (max - first + 1) / portsPerChannel
	return &portPool{first: first, used: make([]bool, n), free: n}, nil
}

// size is the number of blocks (channels) the pool can hold.
func (p *portPool) size() int { return len(p.used) }

// last is the last port of the last block.
func (p *portPool) last() int { return p.first + p.size()*portsPerChannel - 1 }

// blockChoice says which free block take reserves.
type blockChoice int

const (
	randomBlock blockChoice = iota // channels, TURN: not predictable
	lowestBlock                    // reachability probes: the range's edges
	highestBlock
)

// take reserves a free block, chosen as choice says, and returns its first
// port, skipping blocks for which skip returns true (ports found busy by
// the caller).
func (p *portPool) take(skip map[int]bool, choice blockChoice) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	candidates := p.free
	for base := range skip {
		if i := (base - p.first) / portsPerChannel; i >= 0 && i < len(p.used) && !p.used[i] {
			candidates--
		}
	}
	if candidates <= 0 {
		return 0, ErrPoolExhausted
	}
	// Pick the k-th eligible free block: uniform over eligible blocks,
	// or the first or last of them.
	k := 0
	switch choice {
	case randomBlock:
		k = rand.IntN(candidates)
	case highestBlock:
		k = candidates - 1
	}
	for i, used := range p.used {
		base := p.first + i*portsPerChannel
		if used || skip[base] {
			continue
		}
		if k == 0 {
			p.used[i] = true
			p.free--
			return base, nil
		}
		k--
	}
	return 0, ErrPoolExhausted
}

// put returns a block taken with take. Returning a block twice is a no-op.
func (p *portPool) put(base int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	i := (base - p.first) / portsPerChannel
	if i < 0 || i >= len(p.used) || !p.used[i] {
		return
	}
	p.used[i] = false
	p.free++
}

// takeBound takes a free block of pool and binds it with bind. A block
// whose ports another program holds (bind fails with EADDRINUSE) is
// skipped with a warning and left free in the pool, to be tried again
// later; any other failure of bind ends the search, wrapped in what. On
// success the block is the caller's, to put back when it is done.
func takeBound(pool *portPool, log *slog.Logger, what string, choice blockChoice, bind func(base int) error) (int, error) {
	busy := map[int]bool{}
	for {
		base, err := pool.take(busy, choice)
		if err != nil {
			if len(busy) > 0 {
				return 0, fmt.Errorf("%w (%d blocks busy in other programs)", err, len(busy))
			}
			return 0, err
		}
		err = bind(base)
		if err == nil {
			return base, nil
		}
		pool.put(base)
		if !isAddrInUse(err) {
			return 0, fmt.Errorf("%s: %w", what, err)
		}
		log.Warn("relay ports busy, trying another block", "port", base, "err", err)
		busy[base] = true
	}
}
