package gossip

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// maxWants bounds the owners one pull may ask for.
const maxWants = 100_000

// serveRPC accepts node-to-node connections until the listener closes.
func (c *Cluster) serveRPC() {
	defer c.wg.Done()
	for {
		conn, err := c.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				c.log.Warn("catalog listener failed", "err", err)
			}
			return
		}
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			c.serveConn(conn)
		}()
	}
}

// serveConn answers one request on conn, or hands it to the mesh.
func (c *Cluster) serveConn(conn net.Conn) {
	_ = conn.SetDeadline(time.Now().Add(c.cfg.Timing.TCPTimeout))
	// A peer gone silent mid-request would hold this goroutine, and so
	// Shutdown, until the deadline: Shutdown closes the connection.
	stopClosing := context.AfterFunc(c.ctx, func() { conn.Close() })
	defer stopClosing()
	// One port between nodes: catalog frames open with a frame kind (0 or
	// 1), the mesh with a TLS handshake record.
	br := bufio.NewReaderSize(conn, 16)
	if first, err := br.Peek(1); err == nil && first[0] == tlsHandshakeRecord && c.cfg.TLSHandler != nil {
		if !stopClosing() {
			return // shutting down: already closed
		}
		_ = conn.SetDeadline(time.Time{})
		c.cfg.TLSHandler(&peekedConn{Conn: conn, r: br}) // the mesh owns it now
		return
	}
	defer conn.Close()
	m, n, err := readMessage(br, c.sealer)
	if err != nil {
		if !errors.Is(err, io.EOF) {
			c.log.Warn("rejected catalog message", "peer", conn.RemoteAddr().String(), "err", err)
		}
		return
	}
	c.stats.bytesIn.Add(uint64(n))
	reply, err := c.handle(m)
	if err != nil {
		c.log.Warn("rejected catalog message", "peer", conn.RemoteAddr().String(), "from", m.From, "err", err)
		return
	}
	if err := writeMessage(&countingWriter{conn, &c.stats.bytesOut}, reply, c.sealer); err != nil {
		c.log.Debug("catalog reply failed", "peer", conn.RemoteAddr().String(), "err", err)
	}
}

// handle applies a peer's message and builds the reply.
func (c *Cluster) handle(m *message) (*message, error) {
	reply := &message{Type: msgReply, From: c.cfg.NodeName}
	switch m.Type {
	case msgPush:
		c.stats.pushesIn.Add(1)
		for i := range m.Deltas {
			c.receive(&m.Deltas[i], m.From)
		}
		if changed := c.admitEntries(m.Entries, m.From); len(changed) > 0 {
			c.push.enqueueEntries(changed...)
		}
	case msgEntrySync:
		c.answerEntrySync(m, reply)
	case msgPull:
		if len(m.Wants) > maxWants {
			return nil, fmt.Errorf("pull of %d owners exceeds %d", len(m.Wants), maxWants)
		}
		for _, w := range m.Wants {
			if d, ok := c.catalog.deltaSince(w.Owner, w.Since); ok {
				reply.Deltas = append(reply.Deltas, d)
			}
		}
		reply.Entries = c.entriesFor(m.EntryWants)
	default:
		return nil, fmt.Errorf("unexpected %q message", m.Type)
	}
	return reply, nil
}

// receive applies a delta from a peer: something new is forwarded at once,
// a gap is filled by pulling from the sender.
func (c *Cluster) receive(d *Delta, from string) {
	switch res, prev := c.admit(d, from); res {
	case applyApplied:
		// Forward from what we held: after a full delta, d.Since is the
		// owner's floor and may equal its version.
		c.push.enqueue(d.Owner, prev)
	case applyGap:
		c.pull.want(d.Owner, d.Version, from)
	}
}

// tlsHandshakeRecord is the first byte of a TLS connection (the record
// type of its ClientHello), never a catalog frame kind.
const tlsHandshakeRecord = 0x16

// peekedConn is a connection whose first bytes were read ahead into r.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// admit applies a delta from a peer (pushed or pulled) once it passes its
// owner's signature, when catalogs are signed; a refusal is counted and
// logged, and applies nothing.
func (c *Cluster) admit(d *Delta, from string) (applyResult, uint64) {
	if err := c.verifyDelta(d); err != nil {
		var r *errRefused
		errors.As(err, &r)
		c.refuse(d, from, r.reason, err)
		return applyRefused, 0
	}
	res, prev := c.catalog.applyFrom(d)
	if res == applyRefused {
		c.refuse(d, from, RefusedDigest, errors.New("records do not match the state the owner signed"))
	}
	return res, prev
}

// call sends m to the agent serving addr and returns its reply. The dial,
// the write and the read share one deadline, the TCP timeout, and
// Shutdown ends them at once.
func (c *Cluster) call(addr string, m *message) (*message, error) {
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.Timing.TCPTimeout)
	defer cancel()
	conn, err := c.net.Dial(ctx, c.cfg.NodeName, addr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	defer context.AfterFunc(c.ctx, func() { conn.Close() })()
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	if err := writeMessage(&countingWriter{conn, &c.stats.bytesOut}, m, c.sealer); err != nil {
		return nil, err
	}
	reply, n, err := readMessage(conn, c.sealer)
	if err != nil {
		return nil, err
	}
	c.stats.bytesIn.Add(uint64(n))
	if reply.Type != msgReply {
		return nil, fmt.Errorf("unexpected %q reply", reply.Type)
	}
	return reply, nil
}
