package daemon

import (
	"fmt"
	"slices"
	"testing"
)

func TestLogRing(t *testing.T) {
	r := NewLogRing(3)
	if got := r.Last(10); len(got) != 0 {
		t.Fatalf("empty ring gave %q", got)
	}
	fmt.Fprint(r, "one\ntwo\nthr")
	if got := r.Last(10); !slices.Equal(got, []string{"one", "two"}) {
		t.Fatalf("got %q", got)
	}
	fmt.Fprint(r, "ee\nfour\nfive\n")
	if got := r.Last(10); !slices.Equal(got, []string{"three", "four", "five"}) {
		t.Fatalf("after wrap %q", got)
	}
	if got := r.Last(2); !slices.Equal(got, []string{"four", "five"}) {
		t.Fatalf("last 2 %q", got)
	}
	if got := r.Last(-1); len(got) != 0 {
		t.Fatalf("last -1 %q", got)
	}
}
