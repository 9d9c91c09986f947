// Package cni attaches pod network namespaces to the node's pod network
// through CNI plugins (libcni), the way kubelet-side runtimes do.
//
// The network is the first valid config list in the conf dir (lexical
// order; *.conflist, *.conf, *.json), re-read whenever the directory's
// files change, so a config dropped in after crid started is used without a
// restart. Every pod also gets the built-in loopback network (the standard
// loopback plugin, interface lo), attached concurrently with the pod
// network.
//
// State on disk is libcni's: each successful ADD caches its config, runtime
// args and result under <CacheDir>/results. Teardown and GC read that cache,
// so a pod is detached with the config it was attached with even when the
// conf dir changed or emptied meanwhile, and attachments whose pod no
// longer exists (crid crashed between ADD and recording the pod, or during
// a Stop) are found and deleted at start.
//
// Calls for one pod are serialized; calls for different pods run
// concurrently.
package cni
