package netlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Errors callers test for.
var (
	// ErrUnavailable reports an environment that cannot make namespaces.
	ErrUnavailable = errors.New("netlab: network namespaces unavailable")
	// ErrNoDelay reports a machine where Degrade cannot add delay: the
	// kernel has no sch_netem and iptables cannot queue packets to user
	// space (NFQUEUE).
	ErrNoDelay = fmt.Errorf("netlab: neither tc netem (CONFIG_NET_SCH_NETEM) nor iptables NFQUEUE can delay packets here: %w", errors.ErrUnsupported)
	// ErrUnknownHost reports a host name the lab does not have.
	ErrUnknownHost = errors.New("netlab: unknown host")
)

// Subnet is the private range every lab's hosts are numbered in; labs are
// isolated from each other, so they all use it.
const Subnet = "10.213.0.0/24"

// RequireEnv is the environment variable that turns a skip for a missing
// capability into a failure.
const RequireEnv = "STRATA_REQUIRE_NETNS"

var hostName = regexp.MustCompile(`^[a-z][a-z0-9]{0,11}$`)

// labSeq numbers the labs of this process so their namespaces differ.
var labSeq atomic.Uint32

// Lab is a switch and its hosts. Its methods are safe for concurrent use.
type Lab struct {
	t      testing.TB           // nil in a lab made by Open
	logf   func(string, ...any) // Open's logger (nil: silent)
	prefix string               // namespace name prefix, e.g. "nl1234-1"
	sw     string               // switch namespace name
	hosts  map[string]*Host
	order  []string

	mu      sync.Mutex
	cuts    map[[2]string]bool // sorted pair
	isol    map[string]bool
	loss    map[string]float64 // per host, 0..1
	delayBy *string            // DelayMethod, once probed
}

// Host is one namespace with one address.
type Host struct {
	lab  *Lab
	Name string
	// IP is the host's address on the lab's switch.
	IP   net.IP
	ns   string
	port string // its port on the bridge, in the switch namespace
	seq  int    // its number in the lab, from 0
	// dq delays its packets where there is no netem (nil: no delay);
	// netem says a netem qdisc is on its link.
	dq    *delayQueue
	netem bool
}

// Available reports whether this environment can make a lab, and why not.
func Available() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: not root (uid %d)", ErrUnavailable, os.Geteuid())
	}
	for _, bin := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%w: %s not found (Debian: apt-get install iproute2 nftables)", ErrUnavailable, bin)
		}
	}
	return nil
}

// Skip skips t loudly when err (from Available or New) says the
// environment cannot make namespaces, and fails it instead when
// STRATA_REQUIRE_NETNS=1. Any other error fails t.
func Skip(t testing.TB, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if errors.Is(err, ErrUnavailable) && os.Getenv(RequireEnv) != "1" {
		t.Skipf("\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n!! SKIPPED: %v\n!! this test needs root, iproute2 and nftables; set %s=1 to make this a failure\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!", err, RequireEnv)
	}
	t.Fatal(err)
}

// New makes a lab with the named hosts, numbered 10.213.0.1, .2, … in the
// order given, and removes it when t ends (after the cleanups registered
// later, such as those killing the processes running inside it). It skips t
// when the environment cannot make namespaces (see Skip).
func New(t testing.TB, hosts ...string) *Lab {
	t.Helper()
	Skip(t, Available())
	if len(hosts) == 0 || len(hosts) > 250 {
		t.Fatalf("netlab.New: %d hosts, want 1..250", len(hosts))
	}
	sweepStale()
	prefix := fmt.Sprintf("nl%d-%d", os.Getpid(), labSeq.Add(1))
	l := &Lab{t: t, prefix: prefix, sw: prefix + "-sw", hosts: map[string]*Host{},
		cuts: map[[2]string]bool{}, isol: map[string]bool{}, loss: map[string]float64{}}
	t.Cleanup(l.remove)
	if err := l.build(hosts); err != nil {
		Skip(t, err)
	}
	t.Logf("netlab: lab %s with hosts %s on %s", prefix, strings.Join(hosts, ", "), Subnet)
	return l
}

func (l *Lab) build(hosts []string) error {
	if err := ipCmd("netns", "add", l.sw); err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	steps := [][]string{
		{"-n", l.sw, "link", "set", "lo", "up"},
		{"-n", l.sw, "link", "add", "br0", "type", "bridge"},
		{"-n", l.sw, "link", "set", "br0", "up"},
	}
	for i, name := range hosts {
		if !hostName.MatchString(name) {
			return fmt.Errorf("netlab: host name %q: want a lowercase letter then up to 11 letters or digits", name)
		}
		if _, dup := l.hosts[name]; dup {
			return fmt.Errorf("netlab: host %q named twice", name)
		}
		h := &Host{lab: l, Name: name, IP: net.IPv4(10, 213, 0, byte(i+1)).To4(), ns: l.prefix + "-" + name, port: "p" + strconv.Itoa(i), seq: i}
		l.hosts[name] = h
		l.order = append(l.order, name)
		if err := ipCmd("netns", "add", h.ns); err != nil {
			return err
		}
		steps = append(steps,
			[]string{"-n", l.sw, "link", "add", h.port, "type", "veth", "peer", "name", "eth0", "netns", h.ns},
			[]string{"-n", l.sw, "link", "set", h.port, "master", "br0"},
			[]string{"-n", l.sw, "link", "set", h.port, "up"},
			[]string{"-n", h.ns, "link", "set", "lo", "up"},
			[]string{"-n", h.ns, "addr", "add", h.IP.String() + "/24", "dev", "eth0"},
			[]string{"-n", h.ns, "link", "set", "eth0", "up"},
		)
	}
	for _, s := range steps {
		if err := ipCmd(s...); err != nil {
			return err
		}
	}
	return l.apply()
}

// remove deletes every namespace of the lab; the veth pairs go with them.
func (l *Lab) remove() {
	l.mu.Lock()
	for _, name := range l.order {
		if h := l.hosts[name]; h.dq != nil {
			h.dq.close()
			h.dq = nil
		}
	}
	l.mu.Unlock()
	for _, name := range l.order {
		if err := ipCmd("netns", "del", l.hosts[name].ns); err != nil {
			l.log("netlab: %v", err)
		}
	}
	if err := ipCmd("netns", "del", l.sw); err != nil && !strings.Contains(err.Error(), "No such file") {
		l.log("netlab: %v", err)
	}
}

// sweepStale deletes the namespaces of labs whose test process is gone
// (killed before its cleanups ran), so they do not pile up.
func sweepStale() {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	re := regexp.MustCompile(`^nl(\d+)-\d+-`)
	for _, e := range entries {
		m := re.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || unix.Kill(pid, 0) != unix.ESRCH {
			continue
		}
		ipCmd("netns", "del", e.Name())
	}
}

// Host returns the named host; it fails the test for an unknown name.
func (l *Lab) Host(name string) *Host {
	h, ok := l.hosts[name]
	if !ok && l.t != nil {
		l.t.Fatalf("%v: %q", ErrUnknownHost, name)
	}
	return h // nil for an unknown name in a lab made by Open
}

// Hosts returns the hosts' names in the order they were numbered.
func (l *Lab) Hosts() []string { return append([]string(nil), l.order...) }

func pair(a, b string) [2]string {
	if b < a {
		a, b = b, a
	}
	return [2]string{a, b}
}

func (l *Lab) check(names ...string) error {
	for _, n := range names {
		if _, ok := l.hosts[n]; !ok {
			return fmt.Errorf("%w: %q", ErrUnknownHost, n)
		}
	}
	return nil
}

// Cut drops all traffic between hosts a and b, both ways.
func (l *Lab) Cut(a, b string) error {
	if err := l.check(a, b); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cuts[pair(a, b)] = true
	return l.applyLocked()
}

// Isolate drops all traffic between h and every other host.
func (l *Lab) Isolate(h string) error {
	if err := l.check(h); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.isol[h] = true
	return l.applyLocked()
}

// Heal undoes faults. With no arguments it heals everything (cuts,
// isolations, loss and delay); with one host it ends that host's isolation,
// its cuts and its degradation; with two it ends the cut between them.
func (l *Lab) Heal(hosts ...string) error {
	if err := l.check(hosts...); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var undegrade []string
	switch len(hosts) {
	case 0:
		clear(l.cuts)
		clear(l.isol)
		clear(l.loss)
		undegrade = l.order
	case 1:
		h := hosts[0]
		delete(l.isol, h)
		delete(l.loss, h)
		for p := range l.cuts {
			if p[0] == h || p[1] == h {
				delete(l.cuts, p)
			}
		}
		undegrade = hosts
	case 2:
		delete(l.cuts, pair(hosts[0], hosts[1]))
	default:
		return fmt.Errorf("netlab: Heal takes 0, 1 or 2 hosts, got %d", len(hosts))
	}
	err := l.applyLocked()
	for _, h := range undegrade {
		err = errors.Join(err, l.hosts[h].clearDelay())
	}
	return err
}

// Degrade adds delay (each way, so the round trip grows by 2·delay) with
// the given jitter, and drops each packet to or from h with probability
// loss (0..1). A zero Degrade removes h's degradation. Delay and jitter
// need tc netem or iptables NFQUEUE (ErrNoDelay otherwise); loss does not.
func (l *Lab) Degrade(h string, delay, jitter time.Duration, loss float64) error {
	if err := l.check(h); err != nil {
		return err
	}
	if loss < 0 || loss > 1 || delay < 0 || jitter < 0 {
		return fmt.Errorf("netlab: Degrade(%s): delay %v, jitter %v, loss %v: want delay, jitter ≥ 0 and 0 ≤ loss ≤ 1", h, delay, jitter, loss)
	}
	host := l.hosts[h]
	l.mu.Lock()
	defer l.mu.Unlock()
	if delay > 0 || jitter > 0 {
		var err error
		switch l.delayMethodLocked() {
		case "netem":
			err = host.setNetem(delay, jitter)
		case "nfqueue":
			err = host.setQueueDelay(delay, jitter)
		default:
			err = ErrNoDelay
		}
		if err != nil {
			return err
		}
	} else if err := host.clearDelay(); err != nil {
		return err
	}
	if loss > 0 {
		l.loss[h] = loss
	} else {
		delete(l.loss, h)
	}
	return l.applyLocked()
}

// DelayMethod says how Degrade adds delay here: "netem" (tc netem, in
// the kernel), "nfqueue" (iptables NFQUEUE: the test process holds each
// packet, for kernels built without sch_netem), or "" (it cannot: Degrade
// with a delay returns ErrNoDelay).
func (l *Lab) DelayMethod() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.delayMethodLocked()
}

func (l *Lab) delayMethodLocked() string {
	if l.delayBy == nil {
		// Probe on the switch's loopback, which carries no lab traffic.
		m := ""
		sw := func(args ...string) error { return run("ip", append([]string{"netns", "exec", l.sw}, args...)...) }
		rule := []string{"POSTROUTING", "-o", "lo", "-j", "NFQUEUE", "--queue-num", "0", "--queue-bypass"}
		if sw("tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "0ms") == nil {
			sw("tc", "qdisc", "del", "dev", "lo", "root")
			m = "netem"
		} else if sw(append([]string{"iptables", "-t", "mangle", "-A"}, rule...)...) == nil {
			sw(append([]string{"iptables", "-t", "mangle", "-D"}, rule...)...)
			m = "nfqueue"
		}
		l.delayBy = &m
	}
	return *l.delayBy
}

func (h *Host) setNetem(delay, jitter time.Duration) error {
	args := []string{"delay", fmt.Sprintf("%dus", delay.Microseconds())}
	if jitter > 0 {
		args = append(args, fmt.Sprintf("%dus", jitter.Microseconds()))
	}
	for _, end := range [][2]string{{h.ns, "eth0"}, {h.lab.sw, h.port}} {
		cmd := append([]string{"netns", "exec", end[0], "tc", "qdisc", "replace", "dev", end[1], "root", "netem"}, args...)
		if err := ipCmd(cmd...); err != nil {
			return err
		}
		h.netem = true
	}
	return nil
}

// setQueueDelay delays h's packets both ways through a queue the test
// process holds (see delayQueue): the queue is bound before the rules that
// feed it are added.
func (h *Host) setQueueDelay(delay, jitter time.Duration) error {
	if h.dq == nil {
		q, err := openDelayQueue(h, delayQueueNum, uint64(h.seq)+1)
		if err != nil {
			return err
		}
		h.dq = q
		q.set(delay, jitter)
		num := strconv.Itoa(delayQueueNum)
		for _, r := range [][]string{
			{"-t", "mangle", "-A", "POSTROUTING", "-o", "eth0", "-j", "NFQUEUE", "--queue-num", num, "--queue-bypass"},
			{"-t", "mangle", "-A", "PREROUTING", "-i", "eth0", "-j", "NFQUEUE", "--queue-num", num, "--queue-bypass"},
		} {
			if err := run("ip", append([]string{"netns", "exec", h.ns, "iptables"}, r...)...); err != nil {
				return errors.Join(err, h.clearDelay())
			}
		}
		return nil
	}
	h.dq.set(delay, jitter)
	return nil
}

// clearDelay removes h's delay, whichever way it was added.
func (h *Host) clearDelay() error {
	if h.dq == nil {
		return h.clearNetem()
	}
	var err error
	for _, chain := range []string{"POSTROUTING", "PREROUTING"} {
		err = errors.Join(err, run("ip", "netns", "exec", h.ns, "iptables", "-t", "mangle", "-F", chain))
	}
	h.dq.close()
	h.dq = nil
	return err
}

func (h *Host) clearNetem() error {
	if !h.netem {
		return nil
	}
	h.netem = false
	var err error
	for _, end := range [][2]string{{h.ns, "eth0"}, {h.lab.sw, h.port}} {
		out, e := exec.Command("ip", "netns", "exec", end[0], "tc", "qdisc", "del", "dev", end[1], "root").CombinedOutput()
		// Deleting the default qdisc is refused; that is the healed state.
		if e != nil && !bytes.Contains(out, []byte("Cannot delete qdisc with handle of zero")) && !bytes.Contains(out, []byte("No such file")) {
			err = errors.Join(err, fmt.Errorf("netlab: tc qdisc del on %s: %v: %s", end[1], e, bytes.TrimSpace(out)))
		}
	}
	return err
}

func (l *Lab) apply() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.applyLocked()
}

// applyLocked renders the fault state as one nftables table and replaces
// the old one in a single transaction, so no frame sees a half-applied
// state.
func (l *Lab) applyLocked() error {
	var b strings.Builder
	b.WriteString("table bridge netlab {}\ndelete table bridge netlab\ntable bridge netlab {\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n")
	port := func(h string) string { return strconv.Quote(l.hosts[h].port) }
	var isol []string
	for h := range l.isol {
		isol = append(isol, h)
	}
	sort.Strings(isol)
	for _, h := range isol {
		fmt.Fprintf(&b, "    iifname %s drop\n    oifname %s drop\n", port(h), port(h))
	}
	var cuts [][2]string
	for p := range l.cuts {
		cuts = append(cuts, p)
	}
	sort.Slice(cuts, func(i, j int) bool { return cuts[i][0]+"\x00"+cuts[i][1] < cuts[j][0]+"\x00"+cuts[j][1] })
	for _, p := range cuts {
		fmt.Fprintf(&b, "    iifname %s oifname %s drop\n    iifname %s oifname %s drop\n", port(p[0]), port(p[1]), port(p[1]), port(p[0]))
	}
	var lossy []string
	for h := range l.loss {
		lossy = append(lossy, h)
	}
	sort.Strings(lossy)
	for _, h := range lossy {
		n := int(l.loss[h]*1e6 + 0.5)
		fmt.Fprintf(&b, "    iifname %s numgen random mod 1000000 < %d drop\n    oifname %s numgen random mod 1000000 < %d drop\n", port(h), n, port(h), n)
	}
	b.WriteString("  }\n}\n")
	cmd := exec.Command("ip", "netns", "exec", l.sw, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("netlab: nft: %v: %s\nruleset:\n%s", err, bytes.TrimSpace(out), b.String())
	}
	return nil
}

// Addr returns host:port on this host's address.
func (h *Host) Addr(port int) string { return net.JoinHostPort(h.IP.String(), strconv.Itoa(port)) }

// Namespace returns the host's namespace name, for `ip netns exec`.
func (h *Host) Namespace() string { return h.ns }

// Command returns a command that runs name inside the host's namespace.
// The process's pid is its own: `ip netns exec` execs it. It is SIGKILLed
// if the test process dies first (Pdeathsig survives the exec), so a test
// killed before its cleanups leaves no process behind; a test that ends
// normally must still kill what it started.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command("ip", append([]string{"netns", "exec", h.ns, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// DialContext connects from this host: the socket is made inside its
// namespace. It has the signature of net.Dialer.DialContext.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.do(func() error {
		var err error
		c, err = (&net.Dialer{}).DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Dial is DialContext without a context (nats.CustomDialer's shape).
func (h *Host) Dial(network, addr string) (net.Conn, error) {
	return h.DialContext(context.Background(), network, addr)
}

// Listen listens on this host (see net.Listen).
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := h.do(func() error {
		var err error
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// ListenPacket listens for datagrams on this host (see net.ListenPacket).
func (h *Host) ListenPacket(network, addr string) (net.PacketConn, error) {
	var pc net.PacketConn
	err := h.do(func() error {
		var err error
		pc, err = net.ListenPacket(network, addr)
		return err
	})
	return pc, err
}

// do runs fn on an OS thread moved into the host's namespace, then moves
// the thread back. If it cannot move back, the thread stays locked and the
// runtime ends it with the goroutine, so no other goroutine ever runs in
// the wrong namespace.
func (h *Host) do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netlab: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open("/run/netns/" + h.ns)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netlab: host %s: %w", h.Name, err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("netlab: setns into %s: %w", h.ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("netlab: setns back: %w", err)) // the thread dies locked
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

func ipCmd(args ...string) error { return run("ip", args...) }

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
