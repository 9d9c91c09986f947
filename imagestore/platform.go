package imagestore

import (
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// DefaultPlatform is the platform of this process: GOOS/GOARCH, with the
// variant for arm64 ("v8") and arm (from GOARM, "v7" when unknown). amd64
// has no variant.
func DefaultPlatform() ocispec.Platform {
	p := ocispec.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
	switch runtime.GOARCH {
	case "arm64":
		p.Variant = "v8"
	case "arm":
		p.Variant = "v7"
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, st := range bi.Settings {
				if st.Key == "GOARM" && st.Value != "" {
					p.Variant = "v" + strings.SplitN(st.Value, ",", 2)[0]
				}
			}
		}
	}
	return p
}

// normalizePlatform maps the spellings found in the wild onto the ones
// images use (x86_64 → amd64, aarch64 → arm64, armhf → arm/v7, …).
func normalizePlatform(p ocispec.Platform) ocispec.Platform {
	p.OS = strings.ToLower(p.OS)
	p.Architecture = strings.ToLower(p.Architecture)
	p.Variant = strings.ToLower(p.Variant)
	switch p.Architecture {
	case "i386":
		p.Architecture = "386"
	case "x86_64", "x86-64":
		p.Architecture = "amd64"
	case "aarch64":
		p.Architecture = "arm64"
	case "armhf":
		p.Architecture, p.Variant = "arm", "v7"
	case "armel":
		p.Architecture, p.Variant = "arm", "v6"
	}
	if p.Variant != "" && p.Variant[0] >= '0' && p.Variant[0] <= '9' {
		p.Variant = "v" + p.Variant
	}
	return p
}

// effectiveVariant is the variant a platform implies when it names none.
func effectiveVariant(p ocispec.Platform) string {
	if p.Variant != "" {
		return p.Variant
	}
	switch p.Architecture {
	case "arm64":
		return "v8"
	case "arm":
		return "v7"
	case "amd64":
		return "v1"
	}
	return ""
}

// variantLevel parses "vN"; ok is false for any other spelling.
func variantLevel(v string) (int, bool) {
	if !strings.HasPrefix(v, "v") {
		return 0, false
	}
	n, err := strconv.Atoi(v[1:])
	return n, err == nil
}

// platformScore ranks candidate for a node of platform node: 0 means it
// cannot run there; higher is better. An exact variant beats an implied one,
// which beats an older variant of the same family (arm/v6 on an arm/v7
// node, amd64/v2 on an amd64/v3 node).
func platformScore(node, candidate ocispec.Platform) int {
	c := normalizePlatform(candidate)
	if c.OS != node.OS || c.Architecture != node.Architecture {
		return 0
	}
	nv, cv := effectiveVariant(node), effectiveVariant(c)
	if nv == cv {
		if c.Variant != "" {
			return 1002
		}
		return 1001
	}
	nl, nok := variantLevel(nv)
	cl, cok := variantLevel(cv)
	if nok && cok && cl < nl && (c.Architecture == "arm" || c.Architecture == "amd64") {
		return 1 + cl
	}
	return 0
}
