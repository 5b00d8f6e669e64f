package gossip

import (
	"github.com/hashicorp/serf/serf"
)

// eventLoop drains serf's event channel. It only updates the in-memory
// membership and schedules pulls, both cheap, so serf is never blocked.
func (c *Cluster) eventLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.stop:
			return
		case e := <-c.events:
			me, ok := e.(serf.MemberEvent)
			if !ok {
				continue
			}
			for _, sm := range me.Members {
				m := convertMember(sm)
				if me.Type == serf.EventMemberReap {
					c.catalog.removeMember(m.Name)
					c.log.Info("member reaped", "node", m.Name)
					continue
				}
				c.catalog.setMember(m)
				switch me.Type {
				case serf.EventMemberFailed:
					c.stats.memberFailures.Add(1)
					c.log.Warn("member failed", "node", m.Name, "addr", m.GossipAddr())
				case serf.EventMemberLeave:
					c.log.Info("member left", "node", m.Name)
				case serf.EventMemberJoin:
					c.log.Info("member joined", "node", m.Name, "addr", m.GossipAddr())
					// A new member, or one back from a partition or a
					// restart: compare config entries with it now.
					if m.Name != c.cfg.NodeName && m.RPCAddr() != "" {
						c.kickEntrySync(m.RPCAddr())
					}
				}
				if m.Status == StatusAlive {
					c.pull.want(m.Name, m.CatalogVersion(), "")
				}
			}
		}
	}
}

func convertMember(m serf.Member) Member {
	tags := make(map[string]string, len(m.Tags))
	for k, v := range m.Tags {
		tags[k] = v
	}
	return Member{
		Name:        m.Name,
		Addr:        m.Addr,
		Port:        m.Port,
		Tags:        tags,
		Status:      MemberStatus(m.Status),
		ProtocolMin: m.ProtocolMin, ProtocolMax: m.ProtocolMax, ProtocolCur: m.ProtocolCur,
		DelegateMin: m.DelegateMin, DelegateMax: m.DelegateMax, DelegateCur: m.DelegateCur,
	}
}
