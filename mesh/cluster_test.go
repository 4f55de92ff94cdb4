package mesh

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// freePorts returns n TCP ports free on 127.0.0.1 right now.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// TestClusterKeepsModelsReadableWithoutAServer: three embedded servers
// routed to each other form one JetStream cluster; a model stored with
// Replicas 3 is read back through another server than the one it was
// written to; with the stream's leader shut down, the other two (a
// majority of its replicas) store a new version and serve both — the
// store's own retries riding out the election.
func TestClusterKeepsModelsReadableWithoutAServer(t *testing.T) {
	ports := freePorts(t, 3)
	var servers []*server.Server
	for i := range 3 {
		var routes []string
		for j, p := range ports {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", p))
			}
		}
		s, err := StartServer(ServerConfig{StoreDir: t.TempDir(), Cluster: &ClusterConfig{
			ServerName: fmt.Sprintf("n%d", i+1), Listen: fmt.Sprintf("127.0.0.1:%d", ports[i]), Routes: routes}})
		if err != nil {
			t.Fatal(err)
		}
		servers = append(servers, s)
		t.Cleanup(s.Shutdown)
	}
	connect := func(s *server.Server) *nats.Conn {
		nc, err := Dialer{URL: s.ClientURL()}.Connect("test")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		return nc
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nc0 := connect(servers[0])
	// JetStream answers once its meta group has a leader.
	js, err := jetstream.New(nc0)
	if err != nil {
		t.Fatal(err)
	}
	for {
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.AccountInfo(actx)
		acancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the cluster's JetStream never answered: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	w, err := OpenModelStore(ctx, nc0, "job", 3)
	if err != nil {
		t.Fatal(err)
	}
	blob := bytes.Repeat([]byte("θ"), 1000)
	hash, err := w.Put(ctx, "model", 1, blob)
	if err != nil {
		t.Fatal(err)
	}
	info, err := js.Stream(ctx, "OBJ_"+ModelBucket("job"))
	if err != nil {
		t.Fatal(err)
	}
	if n := 1 + len(info.CachedInfo().Cluster.Replicas); info.CachedInfo().Config.Replicas != 3 || n != 3 {
		t.Fatalf("the model stream has %d replicas configured, %d placed; want 3", info.CachedInfo().Config.Replicas, n)
	}
	// The store itself rides out the elections that follow a lost
	// server (the stream's, JetStream's meta group's): no retry here.
	read := func(nc *nats.Conn, version uint64, hash string, want []byte, what string) {
		t.Helper()
		r, err := OpenModelStore(ctx, nc, "job", 0)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		b, err := r.Get(ctx, "model", version, hash)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if !bytes.Equal(b, want) {
			t.Fatalf("%s: read back %d bytes, not what was stored", what, len(b))
		}
	}
	nc2 := connect(servers[2])
	read(nc2, 1, hash, blob, "through another server")
	// Shut down the stream's leader: the other two elect another.
	leader := info.CachedInfo().Cluster.Leader
	var rest []*server.Server
	for _, s := range servers {
		if s.Name() == leader {
			s.Shutdown()
			s.WaitForShutdown()
		} else {
			rest = append(rest, s)
		}
	}
	if len(rest) != 2 {
		t.Fatalf("the stream's leader %q is none of the servers", leader)
	}
	nc := connect(rest[0])
	w2, err := OpenModelStore(ctx, nc, "job", 0)
	if err != nil {
		t.Fatal(err)
	}
	blob2 := bytes.Repeat([]byte("φ"), 1000)
	hash2, err := w2.Put(ctx, "model", 2, blob2)
	if err != nil {
		t.Fatalf("put with the stream's leader %s shut down: %v", leader, err)
	}
	read(nc, 1, hash, blob, "with the stream's leader shut down")
	read(connect(rest[1]), 2, hash2, blob2, "a version stored after the leader was lost, through the other server")
}
