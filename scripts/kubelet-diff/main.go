// kubelet-diff: renders downward API volumes with the kubelet's own code, for comparison with
// dapifs's engine (test/kubelet-diff.test.ts). It reads one JSON case per line:
//   {"pod": <v1.Pod>, "allocatable": {"cpu": "4", ...}}
// decodes the pod with the real k8s.io/api types, applies the API server's defaulting
// (SetObjectDefaults_Pod), then does what the kubelet's downwardapi.CollectData does for the
// pod's first volume, calling the same fieldpath and resource functions. One JSON line out:
//   {"files": {"<path>": {"data": "<base64>", "mode": 420}}} or {"error": "..."}
// `kubelet-diff isprint` answers strconv.IsPrint for code points, and `kubelet-diff
// unicode-version` prints Go's Unicode version: printability differs between Unicode versions.
// Built by build.sh against the Kubernetes 1.20.2 tree from Debian's source package.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"unicode"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	resourcehelper "k8s.io/kubernetes/pkg/api/v1/resource"
	corev1defaults "k8s.io/kubernetes/pkg/apis/core/v1"
	"k8s.io/kubernetes/pkg/fieldpath"
)

type input struct {
	Pod         v1.Pod            `json:"pod"`
	Allocatable map[string]string `json:"allocatable"`
}

type file struct {
	Data []byte `json:"data"`
	Mode int32  `json:"mode"`
}

type output struct {
	Files map[string]file `json:"files,omitempty"`
	Error string          `json:"error,omitempty"`
}

func render(in *input) output {
	pod := &in.Pod
	corev1defaults.SetObjectDefaults_Pod(pod)
	if len(pod.Spec.Volumes) == 0 || pod.Spec.Volumes[0].DownwardAPI == nil {
		return output{Error: "no downwardAPI volume"}
	}
	src := pod.Spec.Volumes[0].DownwardAPI
	alloc := v1.ResourceList{}
	for k, v := range in.Allocatable {
		q, err := resource.ParseQuantity(v)
		if err != nil {
			return output{Error: "allocatable: " + err.Error()}
		}
		alloc[v1.ResourceName(k)] = q
	}
	files := map[string]file{}
	for _, item := range src.Items {
		f := file{Mode: *src.DefaultMode}
		if item.Mode != nil {
			f.Mode = *item.Mode
		}
		if item.FieldRef != nil {
			s, err := fieldpath.ExtractFieldPathAsString(pod, item.FieldRef.FieldPath)
			if err != nil {
				return output{Error: err.Error()}
			}
			f.Data = []byte(s)
		} else if item.ResourceFieldRef != nil {
			s, err := resourcehelper.ExtractResourceValueByContainerNameAndNodeAllocatable(item.ResourceFieldRef, pod, item.ResourceFieldRef.ContainerName, alloc)
			if err != nil {
				return output{Error: err.Error()}
			}
			f.Data = []byte(s)
		}
		if f.Data == nil {
			f.Data = []byte{}
		}
		files[filepath.Clean(item.Path)] = f
	}
	return output{Files: files}
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "unicode-version" {
		fmt.Println(unicode.Version)
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "isprint" {
		// Reads decimal code points, one a line; prints 1 or 0 for strconv.IsPrint of each.
		sc := bufio.NewScanner(os.Stdin)
		w := bufio.NewWriter(os.Stdout)
		defer w.Flush()
		for sc.Scan() {
			r, _ := strconv.Atoi(sc.Text())
			if strconv.IsPrint(rune(r)) {
				w.WriteString("1\n")
			} else {
				w.WriteString("0\n")
			}
		}
		return
	}
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 64<<20), 64<<20)
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	enc := json.NewEncoder(w)
	for sc.Scan() {
		var in input
		var out output
		if err := json.Unmarshal(sc.Bytes(), &in); err != nil {
			out = output{Error: "decode: " + err.Error()}
		} else {
			out = render(&in)
		}
		if err := enc.Encode(out); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
