package directory

// Health probes are spread over a directory's trackers by rendezvous
// (highest random weight) hashing: every tracker weighs each (tracker,
// relay) pair with the same hash, and a relay is probed by the Probers
// trackers of highest weight for it. Trackers that see the same
// trackers agree without talking to each other; a tracker coming or
// going moves only its own share. The others rely on the health the
// relay publishes about itself.

// DefaultProbers is how many trackers health-check each relay.
const DefaultProbers = 3

// weight is the rendezvous weight of tracker for relay: FNV-1a of both
// (a zero byte between, so "ab"+"c" is not "a"+"bc"), then a 64-bit
// finaliser, as FNV alone spreads close names poorly.
func weight(tracker, relay string) uint64 {
	const offset, prime = 14695981039346656037, 1099511628211
	h := uint64(offset)
	for i := range len(tracker) {
		h = (h ^ uint64(tracker[i])) * prime
	}
	h *= prime // the zero byte
	for i := range len(relay) {
		h = (h ^ uint64(relay[i])) * prime
	}
	// splitmix64's finaliser.
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// inShare reports whether self is among the k trackers of highest weight
// for relay; trackers are the others self knows (self among them or not).
// A relay never probes itself, so relay does not count as a tracker for
// its own probes.
func inShare(self string, trackers []string, relay string, k int) bool {
	if self == relay {
		return false
	}
	mine := weight(self, relay)
	higher := 0
	for _, t := range trackers {
		if t == self || t == relay {
			continue
		}
		if w := weight(t, relay); w > mine || w == mine && t < self {
			if higher++; higher >= k {
				return false
			}
		}
	}
	return true
}
