// cripull pulls an image the way containerd's CRI plugin does (client.Pull with unpack into a
// snapshotter and snapshotters.AppendInfoHandlerWrapper, which adds the
// containerd.io/snapshot/cri.* layer annotations), over plain HTTP. Built offline from Debian's
// Go packages by the end-to-end test.
//
//	cripull -address SOCK -namespace NS -snapshotter NAME REF
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/pkg/snapshotters"
	"github.com/containerd/containerd/remotes/docker"
)

func main() {
	address := flag.String("address", "", "containerd socket")
	ns := flag.String("namespace", "k8s.io", "containerd namespace")
	snapshotter := flag.String("snapshotter", "ipfly", "snapshotter name")
	flag.Parse()
	if *address == "" || flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: cripull -address SOCK [-namespace NS] [-snapshotter NAME] REF")
		os.Exit(2)
	}
	ref := flag.Arg(0)
	client, err := containerd.New(*address)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cripull: connect:", err)
		os.Exit(1)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), *ns), 5*time.Minute)
	defer cancel()
	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchAllHosts)),
	})
	start := time.Now()
	img, err := client.Pull(ctx, ref,
		containerd.WithResolver(resolver),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(*snapshotter),
		containerd.WithImageHandlerWrapper(snapshotters.AppendInfoHandlerWrapper(ref)))
	if err != nil {
		fmt.Fprintln(os.Stderr, "cripull: pull:", err)
		os.Exit(1)
	}
	fmt.Printf("pulled %s %s in %.3fs\n", img.Name(), img.Target().Digest, time.Since(start).Seconds())
}
