// The calls of Kubernetes 1.20 (Debian's 1.20.2 tree): see main.go.
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

const release = "1.20.2"

func validateVolumes(pod *core.Pod) field.ErrorList {
	opts := podutil.GetValidationOptionsFromPodSpec(&pod.Spec, nil)
	_, errs := validation.ValidateVolumes(pod.Spec.Volumes, &pod.ObjectMeta, field.NewPath("spec", "volumes"), opts)
	return errs
}

func collect(src *v1.DownwardAPIVolumeSource, pod *v1.Pod, h host) (map[string]volumeutil.FileProjection, error) {
	return downwardapi.CollectData(src.Items, pod, h, src.DefaultMode)
}
