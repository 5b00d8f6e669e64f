//go:build linux

// Command netdelay delays the IP packets that iptables queues to it: a
// stand-in for tc netem's fixed delay on kernels built without sch_netem
// (the virtual machine these tests were written on has neither netem nor
// modules), as long as they have NFQUEUE. The netns zone scenarios run one in each host's
// namespace,
//
//	netdelay -queue 1=100us -queue 2=5ms
//	iptables -t mangle -A POSTROUTING -d PEER -j NFQUEUE --queue-num 2
//
// so that every packet to PEER leaves 5 ms late. Each queue holds its
// packets for its delay, in the order they came, and lets them go with one
// batch verdict for all that are due: a constant delay per queue keeps
// every flow in order. It speaks nfnetlink_queue over a netlink socket of
// its own, needing no library and no cgo; it prints "ready" once every queue
// is bound, before which the rules must not be added (a queue nobody reads
// drops its packets).
//
// With -rtt ADDR it measures instead: the round trip to a TCP listener,
// the median of -count connects (a connect takes one round trip), printed
// as "rtt ADDR median_ns N min_ns N max_ns N", and exits.
package main

import (
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// nfnetlink_queue's protocol (linux/netfilter/nfnetlink_queue.h).
const (
	subsysQueue = 3 // NFNL_SUBSYS_QUEUE: the high byte of the message type

	msgPacket       = 0 // NFQNL_MSG_PACKET: a packet queued to user space
	msgConfig       = 2 // NFQNL_MSG_CONFIG
	msgVerdictBatch = 3 // NFQNL_MSG_VERDICT_BATCH: every packet up to an ID

	attrPacketHdr  = 1 // NFQA_PACKET_HDR: packet ID (be32), protocol, hook
	attrVerdictHdr = 2 // NFQA_VERDICT_HDR: verdict (be32), packet ID (be32)
	attrCfgCmd     = 1 // NFQA_CFG_CMD: command, pad, protocol family (be16)
	attrCfgParams  = 2 // NFQA_CFG_PARAMS: copy range (be32), copy mode
	attrCfgMaxLen  = 3 // NFQA_CFG_QUEUE_MAXLEN (be32)
	cmdBind        = 1 // NFQNL_CFG_CMD_BIND
	copyMeta       = 1 // NFQNL_COPY_META: the packet's metadata, no payload
	verdictAccept  = 1 // NF_ACCEPT
	nlaTypeMask    = 0x3fff
	queueMaxLen    = 1 << 16 // packets a queue holds, in the kernel
	receiveBuffer  = 8 << 20 // the netlink socket's, in bytes
)

// queue is one NFQUEUE number with its delay.
type queue struct {
	num   uint16
	delay time.Duration
	fd    int
	seq   uint32
	// held carries the queued packets to the releaser, in arrival order.
	held chan heldPacket
}

type heldPacket struct {
	id  uint32
	due time.Time
}

func main() {
	var specs []string
	flag.Func("queue", "`NUM=DELAY`: hold the packets of NFQUEUE NUM for DELAY (repeatable)", func(s string) error {
		specs = append(specs, s)
		return nil
	})
	rtt := flag.String("rtt", "", "measure the round trip to the TCP listener at `ADDR`, and exit")
	count := flag.Int("count", 20, "connects of -rtt")
	flag.Parse()
	log.SetFlags(0)
	if *rtt != "" {
		if err := measureRTT(*rtt, *count); err != nil {
			log.Fatalf("netdelay: %v", err)
		}
		return
	}
	if len(specs) == 0 {
		log.Fatal("netdelay: give at least one -queue NUM=DELAY")
	}
	var queues []*queue
	for _, s := range specs {
		num, delay, ok := strings.Cut(s, "=")
		n, err1 := strconv.ParseUint(num, 10, 16)
		d, err2 := time.ParseDuration(delay)
		if !ok || err1 != nil || err2 != nil || d < 0 {
			log.Fatalf("netdelay: -queue %q: want NUM=DELAY", s)
		}
		q, err := openQueue(uint16(n), d)
		if err != nil {
			// Tests skip on these words: the kernel lacks what is needed.
			log.Fatalf("netdelay: no NFQUEUE %d here: %v", n, err)
		}
		queues = append(queues, q)
	}
	for _, q := range queues {
		go q.release()
		go q.receive()
	}
	fmt.Fprintf(os.Stdout, "netdelay: ready: %s\n", strings.Join(specs, " "))
	select {}
}

// measureRTT connects to addr count times, one after another, and prints
// the median, least and greatest connect time.
func measureRTT(addr string, count int) error {
	if count < 1 {
		return errors.New("-count must be at least 1")
	}
	var took []time.Duration
	for range count {
		t0 := time.Now()
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			return fmt.Errorf("rtt: %w", err)
		}
		took = append(took, time.Since(t0))
		c.Close()
	}
	slices.Sort(took)
	fmt.Printf("rtt %s median_ns %d min_ns %d max_ns %d\n", addr, took[len(took)/2], took[0], took[len(took)-1])
	return nil
}

// openQueue binds queue num on a netlink socket of its own.
func openQueue(num uint16, delay time.Duration) (*queue, error) {
	fd, err := syscall.Socket(syscall.AF_NETLINK, syscall.SOCK_RAW|syscall.SOCK_CLOEXEC, syscall.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	// Room for bursts: a packet whose message does not fit is dropped.
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUFFORCE, receiveBuffer); err != nil {
		syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_RCVBUF, receiveBuffer)
	}
	q := &queue{num: num, delay: delay, fd: fd, held: make(chan heldPacket, queueMaxLen)}
	cmd := []byte{cmdBind, 0, 0, syscall.AF_INET}
	params := binary.BigEndian.AppendUint32(nil, 0)
	params = append(params, copyMeta)
	maxLen := binary.BigEndian.AppendUint32(nil, queueMaxLen)
	for _, c := range []struct {
		what string
		attr []byte
	}{
		{"bind", attr(attrCfgCmd, cmd)},
		{"copy mode", attr(attrCfgParams, params)},
		{"queue length", attr(attrCfgMaxLen, maxLen)},
	} {
		if err := q.request(msgConfig, c.attr); err != nil {
			return nil, fmt.Errorf("%s: %w", c.what, err)
		}
	}
	return q, nil
}

// attr encodes one netlink attribute, padded to 4 bytes.
func attr(typ uint16, payload []byte) []byte {
	b := binary.NativeEndian.AppendUint16(nil, uint16(4+len(payload)))
	b = binary.NativeEndian.AppendUint16(b, typ)
	b = append(b, payload...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// message encodes a netlink message of the queue subsystem for this queue.
func (q *queue) message(typ uint16, flags uint16, attrs []byte) []byte {
	q.seq++
	b := binary.NativeEndian.AppendUint32(nil, uint32(syscall.NLMSG_HDRLEN+4+len(attrs)))
	b = binary.NativeEndian.AppendUint16(b, subsysQueue<<8|typ)
	b = binary.NativeEndian.AppendUint16(b, syscall.NLM_F_REQUEST|flags)
	b = binary.NativeEndian.AppendUint32(b, q.seq)
	b = binary.NativeEndian.AppendUint32(b, 0)
	// nfgenmsg: family, version, resource ID (the queue, big-endian).
	b = append(b, syscall.AF_UNSPEC, 0)
	b = binary.BigEndian.AppendUint16(b, q.num)
	return append(b, attrs...)
}

// request sends a configuration message and waits for its acknowledgement.
// Only used before the receiver starts.
func (q *queue) request(typ uint16, attrs []byte) error {
	msg := q.message(typ, syscall.NLM_F_ACK, attrs)
	if err := syscall.Sendto(q.fd, msg, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 8192)
	for {
		n, _, err := syscall.Recvfrom(q.fd, buf, 0)
		if err != nil {
			return err
		}
		for b := buf[:n]; len(b) >= syscall.NLMSG_HDRLEN; {
			l := int(binary.NativeEndian.Uint32(b[0:4]))
			if l < syscall.NLMSG_HDRLEN || l > len(b) {
				return errors.New("malformed netlink answer")
			}
			typ := binary.NativeEndian.Uint16(b[4:6])
			seq := binary.NativeEndian.Uint32(b[8:12])
			if typ == syscall.NLMSG_ERROR && seq == q.seq && l >= syscall.NLMSG_HDRLEN+4 {
				if errno := int32(binary.NativeEndian.Uint32(b[16:20])); errno != 0 {
					return syscall.Errno(-errno)
				}
				return nil
			}
			b = b[align(l):]
		}
	}
}

func align(n int) int { return (n + 3) &^ 3 }

// receive reads the queued packets and hands them to the releaser with the
// time they are due.
func (q *queue) receive() {
	buf := make([]byte, 1<<16)
	for {
		n, _, err := syscall.Recvfrom(q.fd, buf, 0)
		now := time.Now()
		if err != nil {
			if errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.EINTR) {
				log.Printf("netdelay: queue %d: %v (packets were dropped)", q.num, err)
				continue
			}
			log.Fatalf("netdelay: queue %d: receive: %v", q.num, err)
		}
		for b := buf[:n]; len(b) >= syscall.NLMSG_HDRLEN; {
			l := int(binary.NativeEndian.Uint32(b[0:4]))
			if l < syscall.NLMSG_HDRLEN || l > len(b) {
				log.Printf("netdelay: queue %d: malformed message of %d bytes", q.num, l)
				break
			}
			typ := binary.NativeEndian.Uint16(b[4:6])
			switch {
			case typ == syscall.NLMSG_ERROR && l >= syscall.NLMSG_HDRLEN+4:
				if errno := int32(binary.NativeEndian.Uint32(b[16:20])); errno != 0 {
					log.Printf("netdelay: queue %d: verdict refused: %v", q.num, syscall.Errno(-errno))
				}
			case typ == subsysQueue<<8|msgPacket && l >= syscall.NLMSG_HDRLEN+4:
				if id, ok := packetID(b[syscall.NLMSG_HDRLEN+4 : l]); ok {
					q.held <- heldPacket{id: id, due: now.Add(q.delay)}
				}
			}
			b = b[align(l):]
		}
	}
}

// packetID finds the packet ID among a packet message's attributes.
func packetID(attrs []byte) (uint32, bool) {
	for len(attrs) >= 4 {
		l := int(binary.NativeEndian.Uint16(attrs[0:2]))
		typ := binary.NativeEndian.Uint16(attrs[2:4]) & nlaTypeMask
		if l < 4 || l > len(attrs) {
			return 0, false
		}
		if typ == attrPacketHdr && l >= 8 {
			return binary.BigEndian.Uint32(attrs[4:8]), true
		}
		attrs = attrs[min(align(l), len(attrs)):]
	}
	return 0, false
}

// release lets the held packets go as they fall due, every packet already
// due in one verdict.
func (q *queue) release() {
	for p := range q.held {
		time.Sleep(time.Until(p.due))
		last := p.id
	more:
		for {
			select {
			case next := <-q.held:
				if d := time.Until(next.due); d > 0 {
					q.accept(last)
					time.Sleep(d)
				}
				last = next.id
			default:
				break more
			}
		}
		q.accept(last)
	}
}

// accept lets every packet of the queue up to ID id go on.
func (q *queue) accept(id uint32) {
	hdr := binary.BigEndian.AppendUint32(nil, verdictAccept)
	hdr = binary.BigEndian.AppendUint32(hdr, id)
	msg := q.message(msgVerdictBatch, 0, attr(attrVerdictHdr, hdr))
	if err := syscall.Sendto(q.fd, msg, 0, &syscall.SockaddrNetlink{Family: syscall.AF_NETLINK}); err != nil {
		log.Printf("netdelay: queue %d: verdict for packets up to %d: %v", q.num, id, err)
	}
}
