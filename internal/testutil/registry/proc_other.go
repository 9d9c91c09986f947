//go:build !linux

package registry

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
