// kubelet-diff: renders downward API volumes with the kubelet's own code, for comparison with
// dapifs's engine (test/kubelet-diff.test.ts). It reads one JSON case per line:
//   {"pod": <v1.Pod>, "allocatable": {"cpu": "4", ...}}
// decodes the pod with the real k8s.io/api types of its release, then does what that release
// does with it:
//   1. the API server: defaulting (SetObjectDefaults_Pod), then the validation of the pod's
//      volumes (ValidateVolumes, with the options its feature gates give a new pod);
//   2. the kubelet: downwardapi.CollectData for the pod's first volume, with a volume host whose
//      node allocatable is the case's.
// One JSON line out:
//   {"files": {"<path>": {"data": "<base64>", "mode": 420}}}, {"invalid": "<the API server's
//   errors>"} or {"error": "<CollectData's error>"}
// `kubelet-diff isprint` answers strconv.IsPrint for code points, `kubelet-diff unicode-version`
// prints Go's Unicode version, and `kubelet-diff version` the Kubernetes release it was built
// against. The release's own calls are in release_<release>.go: build.sh builds main.go with
// that file, against Debian's 1.20.2 tree (GOPATH) or a release's Go modules.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"unicode"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/kubernetes/pkg/apis/core"
	corev1defaults "k8s.io/kubernetes/pkg/apis/core/v1"
	"k8s.io/kubernetes/pkg/volume"
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
	Files   map[string]file `json:"files,omitempty"`
	Invalid string          `json:"invalid,omitempty"`
	Error   string          `json:"error,omitempty"`
}

// host is the kubelet's VolumeHost as CollectData uses it: only the node's allocatable.
type host struct {
	volume.VolumeHost
	allocatable v1.ResourceList
}

func (h host) GetNodeAllocatable() (v1.ResourceList, error) { return h.allocatable, nil }

func render(in *input) output {
	pod := &in.Pod
	corev1defaults.SetObjectDefaults_Pod(pod)
	var internal core.Pod
	if err := corev1defaults.Convert_v1_Pod_To_core_Pod(pod, &internal, nil); err != nil {
		return output{Error: "convert: " + err.Error()}
	}
	if errs := validateVolumes(&internal); len(errs) > 0 {
		return output{Invalid: errs.ToAggregate().Error()}
	}
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
	data, err := collect(src, pod, host{allocatable: alloc})
	if err != nil {
		return output{Error: err.Error()}
	}
	files := map[string]file{}
	for path, p := range data {
		if p.Data == nil {
			p.Data = []byte{}
		}
		files[path] = file{Data: p.Data, Mode: p.Mode}
	}
	return output{Files: files}
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "version" {
		fmt.Println(release)
		return
	}
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
