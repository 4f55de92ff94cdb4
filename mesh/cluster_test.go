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
// written to, and still after the server it was written through is shut
// down (the other two are a majority of the stream's replicas).
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
	read := func(nc *nats.Conn, what string) {
		t.Helper()
		// The stream, or JetStream's meta group, may be electing a new
		// leader: each try has its own timeout, until ctx ends.
		for {
			actx, acancel := context.WithTimeout(ctx, 2*time.Second)
			r, err := OpenModelStore(actx, nc, "job", 0)
			var b []byte
			if err == nil {
				b, err = r.Get(actx, "model", 1, hash)
			}
			acancel()
			if err == nil {
				if !bytes.Equal(b, blob) {
					t.Fatalf("%s: read back %d bytes, not what was stored", what, len(b))
				}
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("%s: %v", what, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	nc2 := connect(servers[2])
	read(nc2, "through another server")
	servers[0].Shutdown()
	servers[0].WaitForShutdown()
	read(nc2, "with the server it was written through shut down")
	read(connect(servers[1]), "through the third server, the first shut down")
}
