package main

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// nsBlackHoleBound bounds the median time of a registration reaching every
// host that answers while one host black-holes its packets (its firewall
// drops everything, nothing is refused) and is not failed yet, and
// nsBlackHoleMax the slowest: the agents' TCP timeout is 10 s, and the
// pushes to the silent host must wait in its own queue, not hold anyone
// else's. Held behind the silent host, every registration after the first
// would wait for the timeout; and pushed one way round the ring only, the
// first registration on h1 after the cut stopped at h2 and reached h3
// only by a random push or, seconds later, the backstop (9.75 s in one
// run of three). A busy machine (CI runs other packages' tests on the
// same two cores) slows a registration now and then, hence the median;
// the figures, not this check, are the measurement.
const (
	nsBlackHoleBound = time.Second
	nsBlackHoleMax   = 5 * time.Second
)

// nsBlackHole: 5 hosts; every packet to and from h2, h1's ring successor,
// is dropped. Until failure detection declares h2 failed (5 s and more),
// services registered on h1, h3, h4 and h5 in turn must each be on all
// four within a second. After the heal h2 catches up.
func nsBlackHole(t *testing.T, bins nsBins) {
	c := nsNewCluster(t, bins, 5)
	h1, h2 := c.host(1), c.host(2)
	others := []*nsHost{h1, c.host(3), c.host(4), c.host(5)}
	c.isolate(h2)
	start := time.Now()
	c.logf("h2 black-holed: every packet to and from it dropped")
	var took []time.Duration
	done := 0
	for i := 0; ; i++ {
		st, err := h1.members()
		if err != nil {
			t.Fatalf("h1's members: %v", err)
		}
		if st["h2"] != 1 {
			c.logf("h2 is %d on h1 %v after the cut: stop", st["h2"], time.Since(start).Round(time.Millisecond))
			break
		}
		on := others[i%len(others)]
		id := fmt.Sprintf("%s-bh%d", on.name, i)
		on.register(id, "bh", false)
		d := nsPoll(t, 15*time.Second, 10*time.Millisecond, id+" on every host but h2", func() (bool, string) {
			for _, h := range others {
				if ok, err := h.hasInstance("bh", id); !ok {
					return false, fmt.Sprintf("%s: missing (%v)", h.name, err)
				}
			}
			return true, ""
		})
		took = append(took, d)
		done++
		if d > nsBlackHoleBound {
			c.logf("%s (registered on %s %v after the cut) took %v to reach every other host",
				id, on.name, time.Since(start).Round(time.Millisecond), d.Round(time.Millisecond))
		}
	}
	if done == 0 {
		t.Fatal("h2 was declared failed before the first registration")
	}
	slices.Sort(took)
	median, worst := took[len(took)/2], took[len(took)-1]
	if median > nsBlackHoleBound || worst > nsBlackHoleMax {
		t.Errorf("registrations reached every other host in %v (median), %v (slowest), want ≤ %v and ≤ %v: %v",
			median.Round(time.Millisecond), worst.Round(time.Millisecond), nsBlackHoleBound, nsBlackHoleMax, took)
	}
	if done < 3 {
		t.Errorf("only %d registrations before h2 was declared failed: too few to measure", done)
	}
	c.heal()
	want := map[string]bool{}
	for i := range done {
		on := others[i%len(others)]
		want[fmt.Sprintf("%s/%s-bh%d", on.name, on.name, i)] = true
	}
	c.waitCatalog(nsRejoinBound, []*nsHost{h2}, want)
	c.logf("RESULT black-holed h2: %d registrations on the other hosts before it was declared failed, everywhere in %v (median), %v (slowest); goal %v",
		done, median.Round(time.Millisecond), worst.Round(time.Millisecond), nsBlackHoleBound)
}

// hasInstance reports whether the host's catalog lists the instance id of
// service name.
func (h *nsHost) hasInstance(name, id string) (bool, error) {
	var entries []struct{ ServiceID string }
	if err := h.getJSON("/v1/catalog/service/"+url.PathEscape(name), &entries); err != nil {
		return false, err
	}
	for _, e := range entries {
		if strings.EqualFold(e.ServiceID, id) {
			return true, nil
		}
	}
	return false, nil
}
