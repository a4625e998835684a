// containerd's own snapshotter conformance suite (snapshots/testsuite) run against
// ipfly-snapshotter: directly over its gRPC socket (TestDirect, one snapshotter process per
// subtest) and through a running containerd's proxy plugin (TestViaContainerd).
//
// Built offline from Debian's Go packages by ../run_suite.sh:
//
//	GO111MODULE=off GOPATH=/usr/share/gocode GOPROXY=off go test -c
package ipflysuite

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/containerd"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/mount"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/snapshots"
	"github.com/containerd/containerd/snapshots/proxy"
	"github.com/containerd/containerd/snapshots/testsuite"
	"google.golang.org/grpc"
)

func dialUnix(ctx context.Context, sock string) (*grpc.ClientConn, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return grpc.DialContext(ctx, sock, grpc.WithInsecure(), grpc.WithBlock(),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", addr)
		}))
}

// startSnapshotter runs one ipfly-snapshotter with its own root and socket under dir.
func startSnapshotter(ctx context.Context, bin, dir string) (snapshots.Snapshotter, func() error, error) {
	sock := filepath.Join(dir, "ipfly.sock")
	args := []string{"--socket", sock, "--root", filepath.Join(dir, "state"), "--log-level", "warn"}
	if os.Getenv("IPFLY_SUITE_LAZY") != "1" { // plain snapshots need no FUSE mount per subtest
		args = append(args, "--no-lazy")
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, nil, fmt.Errorf("start %s: %w", bin, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stop := func() error {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("ipfly-snapshotter did not exit cleanly: %w", err)
			}
			return nil
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("ipfly-snapshotter did not stop within 15 s of SIGTERM")
		}
	}
	conn, err := dialUnix(ctx, sock)
	if err != nil {
		_ = stop()
		return nil, nil, fmt.Errorf("no ipfly-snapshotter socket at %s: %w", sock, err)
	}
	sn := proxy.NewSnapshotter(snapshotsapi.NewSnapshotsClient(conn), "ipfly")
	return sn, func() error {
		conn.Close()
		return stop()
	}, nil
}

func TestDirect(t *testing.T) {
	bin := os.Getenv("IPFLY_SNAPSHOTTER")
	if bin == "" {
		t.Fatal("IPFLY_SNAPSHOTTER (path of the ipfly-snapshotter binary) is not set")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("ipfly-snapshotter binary: %v", err)
	}
	testsuite.SnapshotterSuite(t, "IpflyDirect", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		return startSnapshotter(ctx, bin, root)
	})
}

// nsSnapshotter gives each subtest its own containerd namespace: the suite uses the same keys
// in every (parallel) subtest, and one containerd + one ipfly-snapshotter serve them all.
type nsSnapshotter struct {
	sn snapshots.Snapshotter
	ns string
}

func (s *nsSnapshotter) c(ctx context.Context) context.Context {
	return namespaces.WithNamespace(ctx, s.ns)
}
func (s *nsSnapshotter) Stat(ctx context.Context, key string) (snapshots.Info, error) {
	return s.sn.Stat(s.c(ctx), key)
}
func (s *nsSnapshotter) Update(ctx context.Context, info snapshots.Info, fieldpaths ...string) (snapshots.Info, error) {
	return s.sn.Update(s.c(ctx), info, fieldpaths...)
}
func (s *nsSnapshotter) Usage(ctx context.Context, key string) (snapshots.Usage, error) {
	return s.sn.Usage(s.c(ctx), key)
}
func (s *nsSnapshotter) Mounts(ctx context.Context, key string) ([]mount.Mount, error) {
	return s.sn.Mounts(s.c(ctx), key)
}
func (s *nsSnapshotter) Prepare(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.sn.Prepare(s.c(ctx), key, parent, opts...)
}
func (s *nsSnapshotter) View(ctx context.Context, key, parent string, opts ...snapshots.Opt) ([]mount.Mount, error) {
	return s.sn.View(s.c(ctx), key, parent, opts...)
}
func (s *nsSnapshotter) Commit(ctx context.Context, name, key string, opts ...snapshots.Opt) error {
	return s.sn.Commit(s.c(ctx), name, key, opts...)
}
func (s *nsSnapshotter) Remove(ctx context.Context, key string) error {
	return s.sn.Remove(s.c(ctx), key)
}
func (s *nsSnapshotter) Walk(ctx context.Context, fn snapshots.WalkFunc, filters ...string) error {
	return s.sn.Walk(s.c(ctx), fn, filters...)
}
func (s *nsSnapshotter) Close() error { return nil }

var nsCounter int64

func TestViaContainerd(t *testing.T) {
	addr := os.Getenv("IPFLY_CONTAINERD_ADDRESS")
	if addr == "" {
		t.Fatal("IPFLY_CONTAINERD_ADDRESS (socket of a containerd with the ipfly proxy plugin) is not set")
	}
	client, err := containerd.New(addr, containerd.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatalf("connect to containerd at %s: %v", addr, err)
	}
	// Parallel subtests run after this function returns: close the client only when they are done.
	t.Cleanup(func() { client.Close() })
	// Fail (never skip) when the proxy plugin cannot reach ipfly-snapshotter.
	ctx := namespaces.WithNamespace(context.Background(), "suite-probe")
	if err := client.SnapshotService("ipfly").Walk(ctx, func(context.Context, snapshots.Info) error { return nil }); err != nil {
		t.Fatalf("containerd cannot reach the ipfly snapshotter: %v", err)
	}
	testsuite.SnapshotterSuite(t, "IpflyContainerd", func(ctx context.Context, root string) (snapshots.Snapshotter, func() error, error) {
		ns := fmt.Sprintf("suite-%d", atomic.AddInt64(&nsCounter, 1))
		return &nsSnapshotter{sn: client.SnapshotService("ipfly"), ns: ns}, nil, nil
	})
}
