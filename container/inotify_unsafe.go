package container

import "unsafe"

// unsafePointer points at the start of b, to read an inotify event header
// the kernel wrote there.
func unsafePointer(b []byte) unsafe.Pointer { return unsafe.Pointer(&b[0]) }
