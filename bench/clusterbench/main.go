// Command clusterbench is `make bench-cluster`: in one run, it brings up
// and tears down the real cluster (a one-node kind cluster on the node
// image built here, warm: image cached) and the simulated cluster (`sim
// up`, tools cached) the same number of times, and prints each step's
// median with the ratio real/simulated. The first round of each warms the
// caches (building whatever is missing) and is not counted.
//
//	go run ./bench/clusterbench [-rounds 3]
//
// --smoke (the test command runs it) checks that the benchmark still
// works without creating a kind cluster: warm, one costs some 40 s of the
// shared 2 cores to be Ready and is already created by the kindcluster
// package's own tests. It resolves the node image the real side boots
// (nodeimage.Build: warm, a key check), runs one real sim up/down round,
// and prints the table with the simulated side only. Its times are not
// figures.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/darktower/delivery/pipelines/kindcluster"
	"github.com/darktower/delivery/pipelines/nodeimage"
	"github.com/darktower/delivery/pipelines/sim"
)

func main() {
	rounds := flag.Int("rounds", 3, "measured rounds of each (after one warm-up)")
	smoke := flag.Bool("smoke", false, "no kind cluster: resolve the node image, one sim up/down round; checks that the benchmark runs (times are not figures)")
	flag.Parse()
	ctx := context.Background()
	if *smoke {
		if err := runSmoke(ctx); err != nil {
			log.Fatal(err)
		}
		return
	}
	var realUp, realReady, realDown, simUp, simDown []time.Duration

	tools, err := sim.EnsureTools(ctx, sim.DefaultCacheDir(), os.Stderr)
	if err != nil {
		log.Fatal(err)
	}
	state, err := os.MkdirTemp("", "clusterbench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(state)
	for i := 0; i <= *rounds; i++ {
		// The real cluster: cluster up (node image reused), every system pod
		// Ready, cluster down.
		name := fmt.Sprintf("dt-bench-%d", i)
		start := time.Now()
		c, err := kindcluster.Up(ctx, kindcluster.Options{Name: name, StateDir: state, Nodes: 1, NoHostPorts: true,
			NodeImage: kindcluster.NodeImageBuilt, Progress: progress(i)})
		if err != nil {
			log.Fatal(err)
		}
		up := time.Since(start)
		client, _, err := c.Client()
		if err != nil {
			log.Fatal(err)
		}
		if err := kindcluster.WaitSystemReady(ctx, client.Typed, 3*time.Minute); err != nil {
			log.Fatal(err)
		}
		ready := time.Since(start)
		start = time.Now()
		if err := kindcluster.Down(ctx, name, state, nil); err != nil {
			log.Fatal(err)
		}
		down := time.Since(start)

		// The simulated cluster.
		dir := filepath.Join(state, fmt.Sprintf("sim-%d", i))
		start = time.Now()
		if _, err := sim.Up(ctx, dir, tools, nil); err != nil {
			log.Fatal(err)
		}
		su := time.Since(start)
		start = time.Now()
		if err := sim.Down(dir, nil); err != nil {
			log.Fatal(err)
		}
		sd := time.Since(start)
		fmt.Fprintf(os.Stderr, "round %d: cluster up %s, system pods Ready %s, down %s; sim up %s, down %s\n",
			i, r(up), r(ready), r(down), r(su), r(sd))
		if i == 0 {
			continue // warm-up
		}
		realUp, realReady, realDown = append(realUp, up), append(realReady, ready), append(realDown, down)
		simUp, simDown = append(simUp, su), append(simDown, sd)
	}
	fmt.Printf("\n%d rounds, medians (warm: node image and sim tools cached)\n\n", *rounds)
	fmt.Println("| step | real cluster (kind, built node image) | simulated cluster (sim) | real / sim |")
	fmt.Println("|---|---:|---:|---:|")
	row := func(step string, a, b []time.Duration) {
		ma, mb := median(a), median(b)
		fmt.Printf("| %s | %s | %s | %.1f |\n", step, r(ma), r(mb), ma.Seconds()/mb.Seconds())
	}
	row("up (nodes Ready / API answering)", realUp, simUp)
	row("up, every system pod Ready", realReady, simUp)
	row("down", realDown, simDown)
}

// runSmoke is --smoke: the real side's node image (built here, or
// reused when its key matches) and one measured round of the simulated
// cluster, through the same calls as the benchmark.
func runSmoke(ctx context.Context) error {
	fmt.Println("SMOKE RUN (--smoke): no kind cluster is created (one costs ~40 s warm); the node image is resolved and the simulated cluster goes up and down once; times are not figures")
	start := time.Now()
	img, err := nodeimage.Build(ctx, nodeimage.Options{Progress: os.Stderr})
	if err != nil {
		return fmt.Errorf("the real side's node image: %w", err)
	}
	fmt.Printf("real side: node image %s (reused: %v) in %s\n", img.Image, img.Reused, r(time.Since(start)))
	tools, err := sim.EnsureTools(ctx, sim.DefaultCacheDir(), os.Stderr)
	if err != nil {
		return err
	}
	state, err := os.MkdirTemp("", "clusterbench-smoke-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(state)
	dir := filepath.Join(state, "sim")
	start = time.Now()
	c, err := sim.Up(ctx, dir, tools, nil)
	if err != nil {
		return err
	}
	su := time.Since(start)
	if err := c.Check(ctx); err != nil {
		sim.Down(dir, nil)
		return fmt.Errorf("sim up, then its check: %w", err)
	}
	start = time.Now()
	if err := sim.Down(dir, nil); err != nil {
		return err
	}
	sd := time.Since(start)
	fmt.Println("\n| step | simulated cluster (sim) |\n|---|---:|")
	fmt.Printf("| up (API answering) | %s |\n| down | %s |\n", r(su), r(sd))
	return nil
}

func progress(round int) io.Writer {
	if round == 0 {
		return os.Stderr // the warm-up may build: show it
	}
	return nil
}

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func r(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }
