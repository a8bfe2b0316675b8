package controller

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

// TestGrantHold: a per-VM grant is kept for grantHold of the controller's
// clock after it was made, even while the pool does not show why, and
// forgotten just after; a grant made again restarts its hold.
func TestGrantHold(t *testing.T) {
	clk := clockwork.NewFakeClock()
	c := &Controller{clock: clk, granted: map[string]time.Time{}}
	c.noteGrant("h1", "v1")
	clk.Advance(10 * time.Second)
	c.noteGrant("h2", "v1")
	c.noteGrant("h1", "v2")

	clk.Advance(grantHold - 10*time.Second) // h1/v1 is exactly grantHold old
	if got, want := sortedGrants(c.heldGrants(clk.Now())), map[string][]string{"h1": {"v1", "v2"}, "h2": {"v1"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("held at grantHold: %v, want %v", got, want)
	}
	clk.Advance(time.Nanosecond)
	if got, want := sortedGrants(c.heldGrants(clk.Now())), map[string][]string{"h1": {"v2"}, "h2": {"v1"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("held just after grantHold: %v, want %v", got, want)
	}
	if _, ok := c.granted["h1/v1"]; ok {
		t.Error("the expired grant is still remembered")
	}
	c.noteGrant("h1", "v2")
	clk.Advance(grantHold)
	if got, want := sortedGrants(c.heldGrants(clk.Now())), map[string][]string{"h1": {"v2"}}; !reflect.DeepEqual(got, want) {
		t.Fatalf("held after a renewed grant: %v, want %v", got, want)
	}
}

func sortedGrants(m map[string][]string) map[string][]string {
	for _, vms := range m {
		slices.Sort(vms)
	}
	return m
}
