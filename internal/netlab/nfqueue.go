package netlab

import (
	"container/heap"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A delayQueue delays packets where the kernel has no netem: an iptables
// NFQUEUE rule hands each packet of a host's eth0 (both ways) to a
// netlink queue, and the queue holds its verdict for the delay (± the
// jitter) before accepting it. The rule has --queue-bypass, so packets
// pass undelayed whenever no queue is bound, and the queue fails open when
// full, so the harness never drops what it was asked only to slow down.
//
// The protocol is nfnetlink_queue (linux/netfilter/nfnetlink_queue.h):
// bind a queue number, ask for packet metadata only (the id is all a
// verdict needs), and answer NFQNL_MSG_VERDICT with NF_ACCEPT and the id.
type delayQueue struct {
	h   *Host
	num uint16
	fd  int

	mu      sync.Mutex
	delay   time.Duration
	jitter  time.Duration
	rng     *rand.Rand
	pending pendingHeap
	wake    chan struct{}

	stop chan struct{}
	wg   sync.WaitGroup
}

const (
	nfnlSubsysQueue = 3
	nfqnlMsgPacket  = 0
	nfqnlMsgVerdict = 1
	nfqnlMsgConfig  = 2

	nfqaPacketHdr  = 1
	nfqaVerdictHdr = 2

	nfqaCfgCmd      = 1
	nfqaCfgParams   = 2
	nfqaCfgQueueMax = 3
	nfqaCfgMask     = 4
	nfqaCfgFlags    = 5

	nfqnlCfgCmdBind  = 1
	nfqnlCopyMeta    = 1
	nfqaCfgFFailOpen = 1
	nfAccept         = 1
	queueMaxLen      = 8192
	recvPollInterval = 100 * time.Millisecond
	// delayQueueNum is the queue number each host's delay uses: queues
	// are per network namespace, so every host can use the same.
	delayQueueNum = 0
)

// openDelayQueue binds queue num in the host's namespace and starts the
// goroutines that own it; close stops them.
func openDelayQueue(h *Host, num uint16, seed uint64) (*delayQueue, error) {
	q := &delayQueue{h: h, num: num, fd: -1, rng: rand.New(rand.NewPCG(seed, uint64(num))), wake: make(chan struct{}, 1), stop: make(chan struct{})}
	err := h.do(func() error {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		if err != nil {
			return err
		}
		q.fd = fd
		return unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
	})
	if err != nil {
		q.closeFD()
		return nil, fmt.Errorf("netlab: nfqueue socket in %s: %w", h.Name, err)
	}
	tv := unix.NsecToTimeval(recvPollInterval.Nanoseconds())
	if err := unix.SetsockoptTimeval(q.fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		q.closeFD()
		return nil, fmt.Errorf("netlab: nfqueue: %w", err)
	}
	// Room for a burst of queued-packet messages (root may exceed
	// rmem_max); an overrun costs delay accuracy only, the queue failing
	// open.
	unix.SetsockoptInt(q.fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	var cmd [4]byte
	cmd[0] = nfqnlCfgCmdBind
	var params [5]byte
	binary.BigEndian.PutUint32(params[:4], 0xffff)
	params[4] = nfqnlCopyMeta
	var maxLen, flags [4]byte
	binary.BigEndian.PutUint32(maxLen[:], queueMaxLen)
	binary.BigEndian.PutUint32(flags[:], nfqaCfgFFailOpen)
	for _, attrs := range [][]nlattr{
		{{nfqaCfgCmd, cmd[:]}},
		{{nfqaCfgParams, params[:]}, {nfqaCfgQueueMax, maxLen[:]}, {nfqaCfgMask, flags[:]}, {nfqaCfgFlags, flags[:]}},
	} {
		if err := q.request(nfqnlMsgConfig, attrs); err != nil {
			q.closeFD()
			return nil, fmt.Errorf("netlab: nfqueue %d in %s: %w", num, h.Name, err)
		}
	}
	q.wg.Go(q.read)
	q.wg.Go(q.release)
	return q, nil
}

func (q *delayQueue) set(delay, jitter time.Duration) {
	q.mu.Lock()
	q.delay, q.jitter = delay, jitter
	q.mu.Unlock()
}

// close accepts every held packet at once and stops the queue; call it
// after the rule that feeds the queue is gone.
func (q *delayQueue) close() {
	close(q.stop)
	q.wg.Wait()
	q.mu.Lock()
	for q.pending.Len() > 0 {
		q.verdict(heap.Pop(&q.pending).(held).id)
	}
	q.mu.Unlock()
	q.closeFD()
}

func (q *delayQueue) closeFD() {
	if q.fd >= 0 {
		unix.Close(q.fd)
		q.fd = -1
	}
}

// read receives queued packets and schedules their verdicts.
func (q *delayQueue) read() {
	buf := make([]byte, 1<<16)
	for {
		select {
		case <-q.stop:
			return
		default:
		}
		n, _, err := unix.Recvfrom(q.fd, buf, 0)
		if err != nil {
			continue // timeout (to look at stop), or ENOBUFS: the kernel failed the overflow open
		}
		now := time.Now()
		for _, id := range packetIDs(buf[:n]) {
			q.mu.Lock()
			d := q.delay
			if q.jitter > 0 {
				d += time.Duration(q.rng.Int64N(int64(2*q.jitter)+1)) - q.jitter
			}
			heap.Push(&q.pending, held{due: now.Add(max(d, 0)), id: id})
			q.mu.Unlock()
		}
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
}

// release accepts each held packet when its time comes.
func (q *delayQueue) release() {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		q.mu.Lock()
		next := time.Hour
		for q.pending.Len() > 0 {
			p := q.pending[0]
			if wait := time.Until(p.due); wait > 0 {
				next = wait
				break
			}
			heap.Pop(&q.pending)
			q.verdict(p.id)
		}
		q.mu.Unlock()
		t.Reset(next)
		select {
		case <-q.stop:
			return
		case <-q.wake:
		case <-t.C:
		}
	}
}

func (q *delayQueue) verdict(id uint32) {
	var v [8]byte
	binary.BigEndian.PutUint32(v[:4], nfAccept)
	binary.BigEndian.PutUint32(v[4:], id)
	unix.Sendto(q.fd, q.message(nfqnlMsgVerdict, unix.NLM_F_REQUEST, []nlattr{{nfqaVerdictHdr, v[:]}}), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
}

type nlattr struct {
	typ  uint16
	data []byte
}

// message builds one nfnetlink message to this queue.
func (q *delayQueue) message(typ uint16, flags uint16, attrs []nlattr) []byte {
	b := make([]byte, unix.NLMSG_HDRLEN+4)
	b[unix.NLMSG_HDRLEN] = unix.AF_UNSPEC
	b[unix.NLMSG_HDRLEN+1] = 0 // NFNETLINK_V0
	binary.BigEndian.PutUint16(b[unix.NLMSG_HDRLEN+2:], q.num)
	for _, a := range attrs {
		var h [4]byte
		binary.NativeEndian.PutUint16(h[:2], uint16(4+len(a.data)))
		binary.NativeEndian.PutUint16(h[2:], a.typ)
		b = append(append(b, h[:]...), a.data...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	binary.NativeEndian.PutUint32(b[0:], uint32(len(b)))
	binary.NativeEndian.PutUint16(b[4:], nfnlSubsysQueue<<8|typ)
	binary.NativeEndian.PutUint16(b[6:], flags)
	return b
}

// request sends a config message and waits for the kernel's ack.
func (q *delayQueue) request(typ uint16, attrs []nlattr) error {
	if err := unix.Sendto(q.fd, q.message(typ, unix.NLM_F_REQUEST|unix.NLM_F_ACK, attrs), 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return err
	}
	buf := make([]byte, 1<<12)
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		n, _, err := unix.Recvfrom(q.fd, buf, 0)
		if err != nil {
			continue
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.Header.Type == unix.NLMSG_ERROR && len(m.Data) >= 4 {
				if errno := int32(binary.NativeEndian.Uint32(m.Data[:4])); errno != 0 {
					return unix.Errno(-errno)
				}
				return nil
			}
		}
	}
	return errors.New("no answer from the kernel")
}

// packetIDs returns the ids of the queued-packet messages in b.
func packetIDs(b []byte) []uint32 {
	msgs, err := syscall.ParseNetlinkMessage(b)
	if err != nil {
		return nil
	}
	var ids []uint32
	for _, m := range msgs {
		if m.Header.Type != nfnlSubsysQueue<<8|nfqnlMsgPacket || len(m.Data) < 4 {
			continue
		}
		attrs := m.Data[4:]
		for len(attrs) >= 4 {
			l := int(binary.NativeEndian.Uint16(attrs[:2]))
			typ := binary.NativeEndian.Uint16(attrs[2:4]) &^ unix.NLA_F_NESTED
			if l < 4 || l > len(attrs) {
				break
			}
			if typ == nfqaPacketHdr && l >= 8 {
				ids = append(ids, binary.BigEndian.Uint32(attrs[4:8]))
			}
			attrs = attrs[min(len(attrs), (l+3)&^3):]
		}
	}
	return ids
}

type held struct {
	due time.Time
	id  uint32
}

type pendingHeap []held

func (p pendingHeap) Len() int           { return len(p) }
func (p pendingHeap) Less(i, j int) bool { return p[i].due.Before(p[j].due) }
func (p pendingHeap) Swap(i, j int)      { p[i], p[j] = p[j], p[i] }
func (p *pendingHeap) Push(x any)        { *p = append(*p, x.(held)) }
func (p *pendingHeap) Pop() any {
	old := *p
	x := old[len(old)-1]
	*p = old[:len(old)-1]
	return x
}
