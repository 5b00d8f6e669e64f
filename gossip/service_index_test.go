package gossip

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strconv"
	"testing"
)

// TestServiceIndexMatchesScan drives a catalog through random deltas and
// membership changes and checks after every step that the index answers
// exactly what a scan of the whole catalog does, and that a service's
// generation moves whenever its instances changed.
func TestServiceIndexMatchesScan(t *testing.T) {
	owners := []string{"n1", "n2", "n3", "n4"}
	names := []string{"s0", "s1", "s2", "s3", "s4"}
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 1))
			clock := newFakeClock()
			c := newCatalog("n1", clock.Now)
			version := map[string]uint64{}
			for _, o := range owners {
				c.setMember(member(o, StatusAlive))
			}
			scan := func(name string) []string {
				return catalogIDs(c.instances(func(_ string, s *Service) bool { return s.Name == name }))
			}
			prev := map[string][]string{}
			gens := map[string]uint64{}
			for _, n := range names {
				prev[n], gens[n] = scan(n), c.ServiceGeneration(n)
			}
			for step := range 300 {
				owner := owners[rng.IntN(len(owners))]
				op := rng.IntN(10)
				version[owner] += uint64(1 + rng.IntN(3))
				v := version[owner]
				rec := func() Record {
					id := "id" + strconv.Itoa(rng.IntN(4))
					if rng.IntN(4) == 0 {
						return Record{ID: id, Version: v, Deleted: true}
					}
					return Record{ID: id, Version: v, Service: svc(id, names[rng.IntN(len(names))])}
				}
				tagOnly := false
				switch {
				case op < 5: // a partial delta, maybe with a gap or stale
					d := Delta{Owner: owner, Since: v - uint64(1+rng.IntN(2)), Version: v}
					for range 1 + rng.IntN(3) {
						d.Records = append(d.Records, rec())
					}
					if owner == "n1" {
						publishLocal(c, &d)
					} else {
						c.apply(&d)
					}
				case op < 6: // a full delta
					d := Delta{Owner: owner, Since: v, Version: v, Full: true}
					for range rng.IntN(4) {
						d.Records = append(d.Records, rec())
					}
					c.apply(&d)
				case op < 7: // the node fails, leaves or comes back
					st := []MemberStatus{StatusAlive, StatusFailed, StatusLeft}[rng.IntN(3)]
					c.setMember(member(owner, st))
				case op < 8: // reaped
					c.removeMember(owner)
				case op < 9: // a tag update that changes nothing shown
					m, ok := c.Member(owner)
					if !ok {
						continue
					}
					m.Tags = map[string]string{TagRPC: m.Tags[TagRPC], TagVersion: strconv.FormatUint(v, 10), TagFloor: m.Tags[TagFloor]}
					c.setMember(m)
					tagOnly = true
				default: // a wiped restart advertises a floor above our replica
					m := member(owner, StatusAlive)
					m.Tags[TagFloor] = strconv.FormatUint(v+uint64(rng.IntN(2)), 10)
					c.setMember(m)
				}
				for _, n := range names {
					got, want := catalogIDs(c.Instances(n)), scan(n)
					if !reflect.DeepEqual(got, want) {
						t.Fatalf("step %d (op %d on %s): Instances(%s) = %v, scan says %v", step, op, owner, n, got, want)
					}
					gen := c.ServiceGeneration(n)
					if !reflect.DeepEqual(want, prev[n]) && gen == gens[n] {
						t.Fatalf("step %d (op %d on %s): %s changed from %v to %v, generation stayed %d", step, op, owner, n, prev[n], want, gen)
					}
					if tagOnly && gen != gens[n] {
						t.Fatalf("step %d: a tag-only update moved the generation of %s", step, n)
					}
					prev[n], gens[n] = want, gen
				}
			}
		})
	}
}

// TestServiceGenerationIsPerService checks that a change to one service
// leaves the generation of another alone, on the same owner too.
func TestServiceGenerationIsPerService(t *testing.T) {
	c := newCatalog("me", newFakeClock().Now)
	c.setMember(member("n2", StatusAlive))
	mustApply(t, c, Delta{Owner: "n2", Version: 10, Records: []Record{
		{ID: "web-1", Version: 10, Service: svc("web-1", "web")},
		{ID: "db-1", Version: 10, Service: svc("db-1", "db")},
	}}, applyApplied)
	web, db := c.ServiceGeneration("web"), c.ServiceGeneration("db")
	if web == 0 || db == 0 {
		t.Fatalf("generations %d, %d: want both set", web, db)
	}
	mustApply(t, c, Delta{Owner: "n2", Since: 10, Version: 11, Records: []Record{
		{ID: "web-1", Version: 11, Service: svc("web-1", "web", StatusCritical)},
	}}, applyApplied)
	if c.ServiceGeneration("web") == web {
		t.Error("web changed, its generation did not")
	}
	if c.ServiceGeneration("db") != db {
		t.Error("web changed, db's generation moved")
	}
	if g := c.ServiceGeneration("nosuch"); g != 0 {
		t.Errorf("unknown service: generation %d, want 0", g)
	}
	c.setMember(member("n2", StatusFailed))
	if c.ServiceGeneration("db") == db {
		t.Error("db's node failed, its generation did not move")
	}
}
