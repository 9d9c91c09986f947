// Package container owns containers: their records, bundles, rootfs
// mounts and lifecycle, run by an OCI runtime (runc) under one conmon
// monitor per container.
//
// # What it owns
//
// A [Manager] keeps one directory per container under its state dir. That
// directory is the OCI bundle and also holds the record checkpoint:
//
//	<StateDir>/
//	  <id>/                  bundle (0700)
//	    config.json          the finished spec (OOM score clamped, root = rootfs)
//	    rootfs/              CreateConfig.RootfsMounts are mounted here
//	    volumes/<i>/         CreateConfig.PrepareVolumes' filesystems (image volumes)
//	    checkpoint.json      {"version":"v1","record":{…}} (atomic writes)
//	    pidfile conmon.pid   written by runc and conmon
//	    ctl winsz attach oom written by conmon (ctl: "2 0 0\n" reopens logs);
//	                         oom also by crid's OOM watcher (oomwatch.go), which
//	                         on cgroup v2 watches each running container's
//	                         memory.events: conmon can exit before the kernel's
//	                         notice, and systemd removes an emptied scope
//	  exits/<id>             conmon's exit file: the exit code in decimal
//	  sockets/               conmon's attach socket dir
//	  .removing-<id>/        a directory being deleted (renamed first)
//
// conmon daemonizes, so it is never crid's child: it survives crid
// restarts, reaps the container and writes exits/<id>. The Manager learns
// about exits from an inotify watch on exits/ and, after a restart, from
// the files already there.
//
// # Imports
//
// internal/* and third-party libraries only (runtime-spec, errdefs, x/sys).
// Never server, sandbox, snapshotter or the CRI API: the server converts.
//
// # Locks
//
// Lock order: Container.mu, then Manager.mu. Manager.mu guards only the
// maps and is never held across a call out to the runtime or the
// filesystem. Container.mu serializes lifecycle changes of one container
// and may be held across runtime calls; readers use the record snapshot
// (an atomic pointer) and never wait for it.
package container
