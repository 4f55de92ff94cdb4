// Package netlab makes a small network of hosts out of Linux network
// namespaces, so that tests can run real strata processes on separate
// "machines" and cut, heal and degrade the links between them.
//
// # Shape
//
// A Lab is one switch namespace holding a bridge, and one namespace per
// host. Each host has one interface, eth0, with an address in
// 10.213.0.0/24, whose veth peer is a port of the bridge. Labs never share
// a namespace, so every lab may use the same addresses: parallel tests do
// not collide, only their namespace names must differ (they carry the
// test binary's pid and a counter).
//
//	host a (10.213.0.1)  host b (10.213.0.2)  host c (10.213.0.3)
//	      eth0                 eth0                 eth0
//	        \                   |                   /
//	         pa ────────────── br0 ────────────── pc      (switch namespace)
//	                            |
//	                            pb
//
// # Faults
//
// Cut, Isolate and Heal rewrite one nftables table of the bridge family in
// the switch namespace, atomically (one `nft -f` transaction). A cut drops
// every frame between two ports in both directions, ARP included, so it
// looks like a real partition: connection attempts time out and open
// connections stall, rather than failing at once as a downed link would
// (a link set down removes the host's route, and the kernel answers
// "network unreachable" immediately, which no partition between machines
// does). Healing removes the rules; stalled TCP connections resume.
//
// Degrade adds latency and jitter to both directions of a host's link (so
// the round trip grows by twice the delay), and packet loss with an
// nftables rule on its switch port (each direction, independently). Delay
// is tc netem on both ends of the link where the kernel has sch_netem;
// where it has not (CONFIG_NET_SCH_NETEM is off on some kernels, this
// project's CI machine among them), an iptables NFQUEUE rule in the host's
// namespace hands every packet in and out of eth0 to a netlink queue the
// test process holds, which accepts each packet once its delay (± jitter,
// drawn from a seeded generator) has passed. DelayMethod says which; with
// neither, Degrade reports ErrNoDelay. The queue rule bypasses when no
// queue is bound and the queue fails open when full, so delaying never
// drops a packet.
//
// # Processes
//
// Host.Command runs a program inside a host through `ip netns exec`: the
// child enters the namespace before it execs, so it lives there for its
// whole life, its pid is its own (ip execs it rather than forking), and
// nothing in the test process changes namespace. The test process itself
// reaches hosts through Host.DialContext and Host.Listen, which create
// their socket on an OS thread locked into the host's namespace and then
// return that thread to its own namespace; a socket stays in the namespace
// it was created in, so the connection is the host's.
//
// # Schedules
//
// Schedule{Seed: s}.Events() draws a reproducible sequence of faults with
// times; Lab.Play applies them. A test logs the seed so a failure can be
// replayed with the same sequence (SeedFromEnv reads STRATA_FAULT_SEED).
//
// # Environment
//
// A lab needs root, iproute2 and nftables (and tc or iptables to delay). Where it cannot make namespaces,
// New skips the test with a loud message; with STRATA_REQUIRE_NETNS=1 it
// fails it instead, so CI cannot pass by testing nothing.
package netlab
