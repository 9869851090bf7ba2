// The calls of Kubernetes 1.37 (its Go modules): see main.go.
package main

import (
	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation/field"
	podutil "k8s.io/kubernetes/pkg/api/pod"
	"k8s.io/kubernetes/pkg/apis/core"
	"k8s.io/kubernetes/pkg/apis/core/validation"
	"k8s.io/kubernetes/pkg/volume/downwardapi"
	volumeutil "k8s.io/kubernetes/pkg/volume/util"
)

const release = "1.37.2"

func validateVolumes(pod *core.Pod) field.ErrorList {
	opts := podutil.GetValidationOptionsFromPodSpecAndMeta(&pod.Spec, nil, &pod.ObjectMeta, nil)
	_, errs := validation.ValidateVolumes(pod.Spec.Volumes, &pod.ObjectMeta, field.NewPath("spec", "volumes"), opts)
	return errs
}

// defaultUser and items' user are dropped by the API server while their gate
// (AtomicWriteVolumeUserFields, alpha) is off, as it is by default.
func collect(src *v1.DownwardAPIVolumeSource, pod *v1.Pod, h host) (map[string]volumeutil.FileProjection, error) {
	return downwardapi.CollectData(src.Items, pod, h, src.DefaultMode, nil)
}
