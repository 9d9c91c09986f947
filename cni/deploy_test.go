package cni

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/stretchr/testify/require"
)

// The default network `make install` puts in place: bridge (gateway,
// masquerade, hairpin) + host-local + portmap, as issue 4 specifies, and
// loadable the way crid loads configs.
func TestDeployedDefaultNetwork(t *testing.T) {
	path := filepath.Join("..", "deploy", "cni", "10-crid-bridge.conflist")
	list, err := libcni.ConfListFromFile(path)
	require.NoError(t, err)
	require.Equal(t, "crid", list.Name)
	require.Len(t, list.Plugins, 2)

	var bridge struct {
		Type        string `json:"type"`
		Bridge      string `json:"bridge"`
		IsGateway   bool   `json:"isGateway"`
		IPMasq      bool   `json:"ipMasq"`
		HairpinMode bool   `json:"hairpinMode"`
		IPAM        struct {
			Type   string                `json:"type"`
			Ranges [][]map[string]string `json:"ranges"`
		} `json:"ipam"`
	}
	require.NoError(t, json.Unmarshal(list.Plugins[0].Bytes, &bridge))
	require.Equal(t, "bridge", bridge.Type)
	require.True(t, bridge.IsGateway && bridge.IPMasq && bridge.HairpinMode, "%+v", bridge)
	require.Equal(t, "host-local", bridge.IPAM.Type)
	require.Equal(t, "10.88.0.0/16", bridge.IPAM.Ranges[0][0]["subnet"])

	require.Equal(t, "portmap", list.Plugins[1].Network.Type)
	require.True(t, list.Plugins[1].Network.Capabilities["portMappings"])

	// Loaded as crid loads it, with the plugins installed.
	conf, bin := t.TempDir(), t.TempDir()
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(conf, filepath.Base(path)), b, 0o644))
	for _, p := range []string{"bridge", "host-local", "portmap", "loopback"} {
		require.NoError(t, os.WriteFile(filepath.Join(bin, p), []byte("#!/bin/sh\n"), 0o755))
	}
	l := load(conf, []string{bin})
	require.Empty(t, l.notReady)
	require.Equal(t, "crid", l.net.Name)
}
