package server

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/containerd/errdefs"
	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// PodSandboxStatus reports a sandbox's state, IPs and namespaces; with
// verbose, its record under "info" and, for a pod on the pod network, the
// result of CNI CHECK under "networkCheck".
func (s *RuntimeService) PodSandboxStatus(ctx context.Context, r *runtime.PodSandboxStatusRequest) (*runtime.PodSandboxStatusResponse, error) {
	id := r.GetPodSandboxId()
	if id == "" {
		return nil, fmt.Errorf("pod sandbox id is required: %w", errdefs.ErrInvalidArgument)
	}
	sb, err := s.sandboxes.Get(id)
	if err != nil {
		return nil, err
	}
	resp := &runtime.PodSandboxStatusResponse{Status: toCRISandboxStatus(sb)}
	if r.GetVerbose() {
		info, err := json.Marshal(sb)
		if err != nil {
			return nil, fmt.Errorf("encode pod sandbox info: %w", err)
		}
		resp.Info = map[string]string{"info": string(info)}
		if sb.NetworkAttached && s.network != nil {
			// CNI CHECK, for diagnostics: what the plugins think of the
			// pod's attachment now.
			verdict := "ok"
			if err := s.network.Check(ctx, CNIPod(sb)); err != nil {
				verdict = err.Error()
			}
			b, _ := json.Marshal(verdict)
			resp.Info["networkCheck"] = string(b)
		}
	}
	return resp, nil
}
