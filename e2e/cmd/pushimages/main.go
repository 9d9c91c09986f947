// Command pushimages builds a named set of crid test images and pushes them
// to a registry, printing each reference with its digests:
//
//	pushimages -registry 127.0.0.1:5000 [-set basic,bench,critest] [-cache DIR]
//	           [-username U -password P] [-json] [-mirror-config DIR]
//
// The sets are defined by imagebuild.Set. Builds are deterministic, so the
// printed digests are stable across runs and hosts with the same busybox;
// built layers are cached under -cache, so re-runs only push.
//
// Images that stand in for upstream ones (the critest set) are pushed under
// their upstream repository paths; -mirror-config writes a certs.d
// directory of hosts.toml files that make their upstream names (e.g.
// registry.k8s.io/pause:3.9) resolve to the registry, for crid's
// registry_config_path.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/crid-dev/crid/internal/testutil/imagebuild"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "pushimages:", err)
		os.Exit(1)
	}
}

// result is one line of -json output.
type result struct {
	Ref       string        `json:"ref"`
	Upstream  string        `json:"upstream,omitempty"`
	MediaType string        `json:"mediaType"`
	Digest    string        `json:"digest"`
	Images    []imageResult `json:"images"`
	Seconds   float64       `json:"seconds"`
}

type imageResult struct {
	Platform  string        `json:"platform"`
	Digest    string        `json:"digest"`
	MediaType string        `json:"mediaType"`
	ConfigID  string        `json:"config"`
	Layers    []layerResult `json:"layers"`
}

type layerResult struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	DiffID    string `json:"diffID"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("pushimages", flag.ContinueOnError)
	fs.SetOutput(stderr)
	registry := fs.String("registry", "", "registry `address`: host:port (plain HTTP) or http(s)://host:port")
	sets := fs.String("set", "basic", "comma-separated image `sets`: "+strings.Join(imagebuild.SetNames(), ", "))
	cache := fs.String("cache", defaultCacheDir(), "build cache `dir`")
	username := fs.String("username", "", "basic auth user name")
	password := fs.String("password", "", "basic auth password (or $PUSHIMAGES_PASSWORD)")
	asJSON := fs.Bool("json", false, "print one JSON object per pushed reference")
	timeout := fs.Duration("timeout", 15*time.Minute, "give up after this long")
	mirrorConfig := fs.String("mirror-config", "", "write <`dir`>/<host>/hosts.toml mirroring each upstream host of the sets (and docker.io) to -registry")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *registry == "" || fs.NArg() != 0 {
		fs.Usage()
		return errors.New("-registry is required and no arguments are accepted")
	}
	if *password == "" {
		*password = os.Getenv("PUSHIMAGES_PASSWORD")
	}

	var targets []imagebuild.Target
	for name := range strings.SplitSeq(*sets, ",") {
		ts, err := imagebuild.Set(strings.TrimSpace(name))
		if err != nil {
			return err
		}
		targets = append(targets, ts...)
	}
	b, err := imagebuild.NewBuilder(*cache)
	if err != nil {
		return err
	}
	var opts []imagebuild.PushOption
	if *username != "" || *password != "" {
		opts = append(opts, imagebuild.WithBasicAuth(*username, *password))
	}
	p, err := imagebuild.NewPusher(*registry, opts...)
	if err != nil {
		return err
	}

	if *mirrorConfig != "" {
		hosts := append(imagebuild.UpstreamHosts(targets), "docker.io")
		slices.Sort(hosts)
		if err := imagebuild.WriteMirrorConfig(*mirrorConfig, p.URL(), slices.Compact(hosts)); err != nil {
			return err
		}
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	enc := json.NewEncoder(stdout)
	for _, t := range targets {
		start := time.Now()
		pushed, err := imagebuild.BuildAndPush(ctx, b, p, t)
		if err != nil {
			return err
		}
		r := result{
			Ref:       pushed.Ref,
			Upstream:  pushed.UpstreamRef,
			MediaType: pushed.MediaType,
			Digest:    pushed.Digest.String(),
			Seconds:   time.Since(start).Seconds(),
		}
		images := []*imagebuild.BuiltImage{pushed.Image}
		if pushed.Index != nil {
			images = pushed.Index.Images
		}
		for _, img := range images {
			ir := imageResult{
				Platform:  img.Platform.String(),
				Digest:    img.Digest.String(),
				MediaType: img.MediaType,
				ConfigID:  img.ConfigDigest.String(),
			}
			for _, l := range img.Layers {
				ir.Layers = append(ir.Layers, layerResult{MediaType: l.MediaType, Digest: l.Digest.String(), Size: l.Size, DiffID: l.DiffID.String()})
			}
			r.Images = append(r.Images, ir)
		}
		if *asJSON {
			if err := enc.Encode(r); err != nil {
				return err
			}
			continue
		}
		printText(stdout, r)
	}
	return nil
}

func printText(w io.Writer, r result) {
	fmt.Fprintf(w, "%s@%s\n", r.Ref, r.Digest)
	if r.Upstream != "" {
		fmt.Fprintf(w, "  upstream %s\n", r.Upstream)
	}
	fmt.Fprintf(w, "  mediaType %s (%.1fs)\n", r.MediaType, r.Seconds)
	for _, img := range r.Images {
		indent := "  "
		if len(r.Images) > 1 || img.Digest != r.Digest {
			fmt.Fprintf(w, "  %s %s %s\n", img.Platform, img.Digest, img.MediaType)
			indent = "    "
		}
		fmt.Fprintf(w, "%sconfig %s\n", indent, img.ConfigID)
		for _, l := range img.Layers {
			fmt.Fprintf(w, "%slayer %s size %d diffID %s %s\n", indent, l.Digest, l.Size, l.DiffID, l.MediaType)
		}
	}
}

func defaultCacheDir() string {
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	return filepath.Join(dir, "crid", "imagebuild")
}
