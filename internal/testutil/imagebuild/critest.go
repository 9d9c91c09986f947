package imagebuild

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// CritestSandboxImage is the sandbox (pause) image the "critest" set
// provides for the runtime under test to use: crid's default sandbox_image.
// It is a different image from pause:3.9, which critest pulls and removes
// while pods may be running.
const CritestSandboxImage = "registry.k8s.io/pause:3.10"

// CritestMirroredHosts are the registry hosts a critest run must mirror to
// the local registry: the upstream hosts of the "critest" set, and
// docker.io, the default host of unqualified names, so that no pull leaves
// the machine.
var CritestMirroredHosts = []string{"docker.io", "gcr.io", "k8s.gcr.io", "public.ecr.aws", "registry.k8s.io"}

// critestLabel names, in each critest image's config, the upstream image it
// stands in for.
const critestLabel = "dev.crid.test.standin-for"

const (
	critestStaging = "k8s-staging-cri-tools/" // gcr.io/k8s-staging-cri-tools/…
	critestE2E     = "e2e-test-images/"       // registry.k8s.io/e2e-test-images/…
)

func critestSet() ([]Target, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	return CritestTargets(ctx, critestInputsDir())
}

// CritestTargets returns the "critest" set: every image that critest
// v1.37.0 (sigs.k8s.io/cri-tools pkg/validate, pkg/framework and
// pkg/benchmark) pulls on Linux, with [Target.Upstream] set to the registry
// host of its upstream name and Repo:Tag its upstream repository path, so
// that a mirror configuration for that host makes the upstream name resolve
// to the local registry. Built from:
//
//   - the critest busybox: Debian's dynamically linked busybox with its glibc
//     files, every applet hard-linked in /bin, pgrep and ipcs stand-ins, and
//     the upstream busybox image's users (downloaded once with apt-get into
//     inputs, unpacked, never installed);
//   - stand-in programs (package standin), built with the go command into
//     inputs: pause, nginx (a front for busybox httpd), nnp.
//
// Images are Docker manifest lists of the host platform and one other
// platform holding only [ArchMarkerPath], as upstream serves multi-arch
// lists; hostnet-nginx-<arch> is a single manifest, as upstream. Each config
// carries the label dev.crid.test.standin-for naming what it stands in for.
//
// Not reproducible: gcr.io/k8s-staging-cri-tools/test-image-digest@sha256:
// 9700f9a2…, which critest pulls by upstream digest; the set pushes a
// test-image-digest:latest that cannot have it.
func CritestTargets(ctx context.Context, inputs string) ([]Target, error) {
	bb, arch, err := critestBusyboxLayer(ctx, inputs)
	if err != nil {
		return nil, fmt.Errorf("critest busybox: %w", err)
	}
	bins, err := buildStandins(ctx, inputs, arch, "pause", "nginx", "nnp")
	if err != nil {
		return nil, err
	}
	c := critestImages{busybox: bb, host: Platform{OS: "linux", Architecture: arch}}
	c.other = Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
	if arch != "amd64" {
		c.other = Platform{OS: "linux", Architecture: "amd64"}
	}
	var out []Target
	add := func(upstream, repo, tag string, idx *Index) {
		out = append(out, Target{Upstream: upstream, Repo: repo, Tag: tag, Index: idx})
	}

	// registry.k8s.io/e2e-test-images: the default container image, the web
	// server, the httpd of the multi-container specs and nonewprivs.
	add("registry.k8s.io", critestE2E+"busybox", "1.29-2", c.busyboxIndex("e2e-test-images/busybox:1.29-2", Config{}))
	nginx := c.nginxLayer(bins["nginx"])
	add("registry.k8s.io", critestE2E+"nginx", "1.14-2", c.index(Image{
		Layers: []Layer{bb, nginx, nginxConf(80)},
		Config: c.config("e2e-test-images/nginx:1.14-2", Config{
			Cmd: []string{"nginx", "-g", "daemon off;"}, ExposedPorts: []string{"80/tcp"},
		}),
	}))
	add("registry.k8s.io", critestE2E+"httpd", "2.4.39-4", c.index(Image{
		Layers: []Layer{bb, httpdLayer()},
		Config: c.config("e2e-test-images/httpd:2.4.39-4", Config{
			Cmd: []string{"httpd-foreground"}, ExposedPorts: []string{"80/tcp"}, WorkingDir: "/usr/local/apache2",
		}),
	}))
	add("registry.k8s.io", critestE2E+"nonewprivs", "1.3", c.index(Image{
		Layers: []Layer{bb, {Entries: []Entry{HostFile("usr/local/bin/nnp", bins["nnp"], 0o755|fs.ModeSetuid)}}},
		Config: c.config("e2e-test-images/nonewprivs:1.3", Config{Entrypoint: []string{"/usr/local/bin/nnp"}}),
	}))

	// pause: one image under two registries (critest checks that removing
	// it by one name removes both), and the sandbox image, a different one.
	pauseLayer := Layer{Entries: []Entry{HostFile("pause", bins["pause"], 0o755)}}
	pause := func(version string) *Index {
		return c.index(Image{Layers: []Layer{pauseLayer}, Config: Config{
			Entrypoint: []string{"/pause"}, User: "65535:65535",
			Labels: map[string]string{critestLabel: "pause:" + version},
		}})
	}
	pause39 := pause("3.9")
	add("registry.k8s.io", "pause", "3.9", pause39)
	add("k8s.gcr.io", "pause", "3.9", pause39)
	sandboxRepo, sandboxTag, _ := strings.Cut(strings.TrimPrefix(CritestSandboxImage, "registry.k8s.io/"), ":")
	add("registry.k8s.io", sandboxRepo, sandboxTag, pause(sandboxTag))

	// gcr.io/k8s-staging-cri-tools: the image-user images (busybox with
	// USER), image-predefined-group, and image-test ones (busybox plus an
	// empty file named after the image), as built by cri-tools' images/build.
	for _, u := range []struct{ repo, user string }{
		{"test-image-user-uid", "1002"},
		{"test-image-user-username", "www-data"},
		{"test-image-user-uid-group", "1003:1004"},
		{"test-image-user-username-group", "www-data:1004"},
	} {
		add("gcr.io", critestStaging+u.repo, "latest", c.busyboxIndex(critestStaging+u.repo, Config{User: u.user}))
	}
	add("gcr.io", critestStaging+"test-image-predefined-group", "latest", c.index(Image{
		Layers: []Layer{bb, predefinedGroupLayer()},
		Config: c.config(critestStaging+"test-image-predefined-group", Config{User: "1000"}),
	}))
	testImage := func(name string) *Index {
		return c.index(Image{
			Layers: []Layer{bb, {Entries: []Entry{File(name, "", 0o644)}}},
			Config: c.config(critestStaging+name, Config{}),
		})
	}
	for _, name := range []string{"test-image-1", "test-image-2", "test-image-3", "test-image-latest", "test-image-digest"} {
		add("gcr.io", critestStaging+name, "latest", testImage(name))
	}
	tags := testImage("test-image-tags") // upstream: the file "same-image"; one image, three tags
	for _, tag := range []string{"1", "2", "3"} {
		add("gcr.io", critestStaging+"test-image-tags", tag, tags)
	}
	tagged := testImage("test-image-tag")
	for _, tag := range []string{"test", "all"} {
		add("gcr.io", critestStaging+"test-image-tag", tag, tagged)
	}
	hostnet := "hostnet-nginx-" + arch
	out = append(out, Target{Upstream: "gcr.io", Repo: critestStaging + hostnet, Tag: "latest", Image: &Image{
		Layers: []Layer{bb, nginx, nginxConf(12003)},
		Config: c.config(critestStaging+hostnet, Config{
			Cmd: []string{"nginx", "-g", "daemon off;"}, ExposedPorts: []string{"80/tcp"},
		}),
		Platform: c.host, MediaTypes: Docker,
	}})

	// public.ecr.aws/docker/library/busybox: pkg/benchmark's image listing
	// images (only used with -benchmark), one distinct image per tag.
	for _, tag := range []string{"1.35.0-glibc", "1-uclibc", "1", "1-glibc", "1-musl"} {
		add("public.ecr.aws", "docker/library/busybox", tag, c.busyboxIndex("docker/library/busybox:"+tag, Config{}))
	}
	return out, nil
}

// critestImages builds the images of the critest set.
type critestImages struct {
	busybox     Layer
	host, other Platform
}

// config completes cfg with the busybox image's defaults (Cmd sh, PATH)
// and the stand-in label.
func (c critestImages) config(standinFor string, cfg Config) Config {
	if cfg.Cmd == nil && cfg.Entrypoint == nil {
		cfg.Cmd = []string{"sh"}
	}
	if cfg.Env == nil {
		cfg.Env = []string{BusyboxEnvPath}
	}
	cfg.Labels = map[string]string{critestLabel: standinFor}
	return cfg
}

// index returns a Docker manifest list of img for the host platform and a
// marker-only image for the other platform.
func (c critestImages) index(img Image) *Index {
	img.Platform = c.host
	other := Image{
		Layers:   []Layer{{Entries: []Entry{File(ArchMarkerPath, c.other.String()+"\n", 0o644)}}},
		Config:   img.Config,
		Platform: c.other,
	}
	return &Index{MediaTypes: Docker, Images: []Image{img, other}}
}

func (c critestImages) busyboxIndex(standinFor string, cfg Config) *Index {
	return c.index(Image{Layers: []Layer{c.busybox}, Config: c.config(standinFor, cfg)})
}

// nginxLayer holds the nginx stand-in and nginx's default page.
func (c critestImages) nginxLayer(bin string) Layer {
	return Layer{Entries: []Entry{
		HostFile("usr/sbin/nginx", bin, 0o755),
		File("usr/share/nginx/html/index.html", nginxIndex, 0o644),
		Dir("var/log/nginx", 0o755),
	}}
}

const nginxIndex = `<!DOCTYPE html>
<html>
<head><title>Welcome to nginx!</title></head>
<body>
<h1>Welcome to nginx!</h1>
<p>crid test stand-in: busybox httpd behind an nginx-like master process.</p>
</body>
</html>
`

// nginxConf is the server block the nginx stand-in reads its port and root
// from, as upstream's default.conf (hostnet-nginx listens on 12003).
func nginxConf(port int) Layer {
	return Layer{Entries: []Entry{File("etc/nginx/conf.d/default.conf", fmt.Sprintf(`server {
    listen       %d;
    server_name  localhost;

    location / {
        root   /usr/share/nginx/html;
        index  index.html index.htm;
    }
}
`, port), 0o644)}}
}

// httpdForeground is the httpd image's command. Upstream's is a shell
// script too; this one serves with busybox httpd and, like Apache's start-up
// warning, logs a line naming httpd (critest looks for it in the log).
const httpdForeground = `#!/bin/sh
# httpd-foreground stand-in: busybox httpd on port 80 in the foreground.
set -e
echo "httpd: serving /usr/local/apache2/htdocs on port 80 (crid test stand-in: busybox httpd)" >&2
exec httpd -f -p 80 -h /usr/local/apache2/htdocs
`

func httpdLayer() Layer {
	return Layer{Entries: []Entry{
		File("usr/local/bin/httpd-foreground", httpdForeground, 0o755),
		File("usr/local/apache2/htdocs/index.html", "<html><body><h1>It works!</h1></body></html>\n", 0o644),
	}}
}

// predefinedGroupLayer is what image-predefined-group's Dockerfile adds:
// default-user (uid 1000, gid 1000), also a member of
// group-defined-in-image (gid 50000).
func predefinedGroupLayer() Layer {
	return Layer{Entries: []Entry{
		File("etc/passwd", critestPasswd+"default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n", 0o644),
		File("etc/group", critestGroup+"default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n", 0o644),
		Dir("home/default-user", 0o755).Owner(1000, 1000),
	}}
}

// UpstreamHosts returns the sorted upstream hosts of targets.
func UpstreamHosts(targets []Target) []string {
	var hosts []string
	for _, t := range targets {
		if t.Upstream != "" && !slices.Contains(hosts, t.Upstream) {
			hosts = append(hosts, t.Upstream)
		}
	}
	slices.Sort(hosts)
	return hosts
}

// WriteMirrorConfig writes, for each host, a containerd-style
// <dir>/<host>/hosts.toml that sends the host's pulls and resolves to the
// registry at registryURL (e.g. "http://127.0.0.1:5000"): as the one mirror,
// and as the host's server too, so that no request leaves the machine even
// when the mirror fails. Mirrors are asked with the same repository path
// (and ?ns=<host>), which is why targets are pushed under their upstream
// repository paths.
func WriteMirrorConfig(dir, registryURL string, hosts []string) error {
	for _, h := range hosts {
		content := fmt.Sprintf(`# Written by crid's imagebuild: %s is served by the local test registry.
server = %q

[host.%q]
  capabilities = ["pull", "resolve"]
`, h, registryURL, registryURL)
		if err := os.MkdirAll(filepath.Join(dir, h), 0o755); err != nil {
			return fmt.Errorf("write mirror config: %w", err)
		}
		if err := os.WriteFile(filepath.Join(dir, h, "hosts.toml"), []byte(content), 0o644); err != nil {
			return fmt.Errorf("write mirror config: %w", err)
		}
	}
	return nil
}
