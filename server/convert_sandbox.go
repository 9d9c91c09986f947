package server

import (
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/crid-dev/crid/sandbox"
)

func namespaceModeFromCRI(m runtime.NamespaceMode) sandbox.NamespaceMode {
	switch m {
	case runtime.NamespaceMode_NODE:
		return sandbox.NamespaceNode
	case runtime.NamespaceMode_CONTAINER:
		return sandbox.NamespaceContainer
	case runtime.NamespaceMode_TARGET:
		return sandbox.NamespaceTarget
	default:
		return sandbox.NamespacePod
	}
}

func namespaceModeToCRI(m sandbox.NamespaceMode) runtime.NamespaceMode {
	switch m {
	case sandbox.NamespaceNode:
		return runtime.NamespaceMode_NODE
	case sandbox.NamespaceContainer:
		return runtime.NamespaceMode_CONTAINER
	case sandbox.NamespaceTarget:
		return runtime.NamespaceMode_TARGET
	default:
		return runtime.NamespaceMode_POD
	}
}

func sandboxConfigFromCRI(c *runtime.PodSandboxConfig, handler string) sandbox.Config {
	md := c.GetMetadata()
	nso := c.GetLinux().GetSecurityContext().GetNamespaceOptions()
	cfg := sandbox.Config{
		Metadata: sandbox.Metadata{
			Name: md.GetName(), Namespace: md.GetNamespace(), UID: md.GetUid(), Attempt: md.GetAttempt(),
		},
		Hostname:     c.GetHostname(),
		LogDirectory: c.GetLogDirectory(),
		DNS: sandbox.DNSConfig{
			Servers:  c.GetDnsConfig().GetServers(),
			Searches: c.GetDnsConfig().GetSearches(),
			Options:  c.GetDnsConfig().GetOptions(),
		},
		Labels:       c.GetLabels(),
		Annotations:  c.GetAnnotations(),
		CgroupParent: c.GetLinux().GetCgroupParent(),
		Namespaces: sandbox.NamespaceOptions{
			Network: namespaceModeFromCRI(nso.GetNetwork()),
			PID:     namespaceModeFromCRI(nso.GetPid()),
			IPC:     namespaceModeFromCRI(nso.GetIpc()),
		},
		Sysctls:        c.GetLinux().GetSysctls(),
		RuntimeHandler: handler,
	}
	for _, pm := range c.GetPortMappings() {
		cfg.PortMappings = append(cfg.PortMappings, sandbox.PortMapping{
			Protocol:      pm.GetProtocol().String(),
			ContainerPort: pm.GetContainerPort(),
			HostPort:      pm.GetHostPort(),
			HostIP:        pm.GetHostIp(),
		})
	}
	return cfg
}

func toCRISandboxMetadata(m sandbox.Metadata) *runtime.PodSandboxMetadata {
	return &runtime.PodSandboxMetadata{Name: m.Name, Namespace: m.Namespace, Uid: m.UID, Attempt: m.Attempt}
}

// toCRISandboxState: only a Ready sandbox can take containers; one being
// created or stopped is not ready.
func toCRISandboxState(s sandbox.State) runtime.PodSandboxState {
	if s == sandbox.StateReady {
		return runtime.PodSandboxState_SANDBOX_READY
	}
	return runtime.PodSandboxState_SANDBOX_NOTREADY
}

func toCRISandboxStatus(sb *sandbox.Sandbox) *runtime.PodSandboxStatus {
	st := &runtime.PodSandboxStatus{
		Id:        sb.ID,
		Metadata:  toCRISandboxMetadata(sb.Config.Metadata),
		State:     toCRISandboxState(sb.State),
		CreatedAt: sb.CreatedAt.UnixNano(),
		Network:   &runtime.PodSandboxNetworkStatus{Ip: sb.IP},
		Linux: &runtime.LinuxPodSandboxStatus{Namespaces: &runtime.Namespace{Options: &runtime.NamespaceOption{
			Network: namespaceModeToCRI(sb.Config.Namespaces.Network),
			Pid:     namespaceModeToCRI(sb.Config.Namespaces.PID),
			Ipc:     namespaceModeToCRI(sb.Config.Namespaces.IPC),
		}}},
		Labels:         sb.Config.Labels,
		Annotations:    sb.Config.Annotations,
		RuntimeHandler: sb.Config.RuntimeHandler,
	}
	for _, ip := range sb.AdditionalIPs {
		st.Network.AdditionalIps = append(st.Network.AdditionalIps, &runtime.PodIP{Ip: ip})
	}
	return st
}
