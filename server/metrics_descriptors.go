package server

import (
	"context"

	runtime "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// ListMetricDescriptors describes every metric ListPodSandboxMetrics may
// return (convert_metrics.go): kubelet builds its /metrics/cadvisor
// families from them once, at start.
func (s *RuntimeService) ListMetricDescriptors(context.Context, *runtime.ListMetricDescriptorsRequest) (*runtime.ListMetricDescriptorsResponse, error) {
	out := make([]*runtime.MetricDescriptor, 0, len(metricDescs))
	for _, d := range metricDescs {
		out = append(out, toCRIMetricDescriptor(d))
	}
	return &runtime.ListMetricDescriptorsResponse{Descriptors: out}, nil
}
