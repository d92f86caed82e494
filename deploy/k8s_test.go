package deploy

import (
	"bytes"
	"encoding/json"

	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// scaledObject is KEDA's keda.sh/v1alpha1 ScaledObject, as far as these
// manifests use it (KEDA's module is not a dependency): a field it does
// not know fails the strict decoding like any other.
type scaledObject struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
	Spec struct {
		ScaleTargetRef struct {
			Name string `json:"name"`
		} `json:"scaleTargetRef"`
		MinReplicaCount *int `json:"minReplicaCount"`
		MaxReplicaCount *int `json:"maxReplicaCount"`
		CooldownPeriod  *int `json:"cooldownPeriod,omitempty"`
		Triggers        []struct {
			Type     string            `json:"type"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

// build runs `kustomize build` on base, as the kustomize API does it.
func build(t *testing.T) [][]byte {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), "k8s/base")
	if err != nil {
		t.Fatalf("kustomize build k8s/base: %v", err)
	}
	var out [][]byte
	for _, r := range rm.Resources() {
		data, err := r.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, data)
	}
	return out
}

// strict decodes data into v, refusing any field v's type does not have.
func strict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// Every manifest kustomize builds decodes strictly into its Kubernetes API
// type, and the pods follow the deployment rules: non-root, read-only root
// filesystem, probes, a grace period above DRAIN_TIMEOUT, resources, and a
// PodDisruptionBudget each.
func TestManifests(t *testing.T) {
	deployments := map[string]*appsv1.Deployment{}
	pdbs := map[string]bool{}
	var scaled []scaledObject
	kinds := map[string]int{}
	for _, data := range build(t) {
		var meta struct{ Kind, APIVersion string }
		if err := json.Unmarshal(data, &meta); err != nil {
			t.Fatal(err)
		}
		kinds[meta.Kind]++
		var obj any
		switch meta.Kind {
		case "Deployment":
			obj = &appsv1.Deployment{}
		case "StatefulSet":
			obj = &appsv1.StatefulSet{}
		case "Job":
			obj = &batchv1.Job{}
		case "Service":
			obj = &corev1.Service{}
		case "ConfigMap":
			obj = &corev1.ConfigMap{}
		case "Namespace":
			obj = &corev1.Namespace{}
		case "PodDisruptionBudget":
			obj = &policyv1.PodDisruptionBudget{}
		case "ScaledObject":
			obj = &scaledObject{}
		default:
			t.Errorf("a %s %s: no type to check it against", meta.APIVersion, meta.Kind)
			continue
		}
		if err := strict(data, obj); err != nil {
			t.Errorf("%s does not decode strictly: %v\n%s", meta.Kind, err, data)
			continue
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			deployments[o.Name] = o
		case *policyv1.PodDisruptionBudget:
			pdbs[o.Spec.Selector.MatchLabels["app.kubernetes.io/component"]] = true
		case *scaledObject:
			scaled = append(scaled, *o)
		}
	}
	t.Logf("kinds: %v", kinds)
	if len(deployments) == 0 || kinds["StatefulSet"] != 1 || kinds["Job"] != 1 {
		t.Fatalf("kinds built: %v, want the NATS StatefulSet, the provision Job and Deployments", kinds)
	}
	for name, d := range deployments {
		p := d.Spec.Template.Spec
		c := p.Containers[0]
		switch {
		case p.SecurityContext == nil || p.SecurityContext.RunAsNonRoot == nil || !*p.SecurityContext.RunAsNonRoot:
			t.Errorf("%s: not non-root", name)
		case c.SecurityContext == nil || c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem:
			t.Errorf("%s: root filesystem not read-only", name)
		case c.ReadinessProbe == nil || c.LivenessProbe == nil:
			t.Errorf("%s: probes missing", name)
		case p.TerminationGracePeriodSeconds == nil || *p.TerminationGracePeriodSeconds <= 8:
			t.Errorf("%s: termination grace period not above DRAIN_TIMEOUT (8s)", name)
		case c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero():
			t.Errorf("%s: no memory request and limit", name)
		case !pdbs[name]:
			t.Errorf("%s: no PodDisruptionBudget", name)
		}
	}
	if len(scaled) != len(deployments) {
		t.Errorf("%d ScaledObjects for %d Deployments", len(scaled), len(deployments))
	}
	for _, so := range scaled {
		if _, ok := deployments[so.Spec.ScaleTargetRef.Name]; !ok {
			t.Errorf("ScaledObject %s scales a Deployment that does not exist", so.Metadata.Name)
		}
	}
	checkConsumers(t, deployments, scaled)
}

// checkConsumers compares the JetStream triggers of each step's
// ScaledObject with the consumers its Deployment's functions consume from
// (`orderflow consumers` with its FUNCTIONS and PARTITIONS): a trigger on
// a consumer that does not exist would never scale the step up.
func checkConsumers(t *testing.T, deployments map[string]*appsv1.Deployment, scaled []scaledObject) {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "orderflow")
	build := exec.Command("go", "build", "-o", bin, "./functions")
	build.Dir = ".." // the main module
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build orderflow: %v\n%s", err, out)
	}
	partitions := ""
	if cm, err := os.ReadFile("k8s/base/kustomization.yaml"); err == nil {
		for _, line := range strings.Split(string(cm), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "- PARTITIONS="); ok {
				partitions = v
			}
		}
	}
	if partitions == "" {
		t.Fatal("kustomization.yaml sets no PARTITIONS")
	}
	for _, so := range scaled {
		d := deployments[so.Spec.ScaleTargetRef.Name]
		if d == nil {
			continue
		}
		functions := ""
		for _, e := range d.Spec.Template.Spec.Containers[0].Env {
			if e.Name == "FUNCTIONS" {
				functions = e.Value
			}
		}
		cmd := exec.Command(bin, "consumers")
		cmd.Env = append(os.Environ(), "FUNCTIONS="+functions, "PARTITIONS="+partitions)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("orderflow consumers for %s: %v", d.Name, err)
		}
		var want, got []string
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if f := strings.Fields(line); len(f) == 3 && f[0] != "DEADLETTERS" {
				want = append(want, f[0]+"/"+f[1])
			}
		}
		for _, tr := range so.Spec.Triggers {
			if tr.Type == "nats-jetstream" {
				got = append(got, tr.Metadata["stream"]+"/"+tr.Metadata["consumer"])
			}
		}
		slices.Sort(want)
		slices.Sort(got)
		if !slices.Equal(want, got) {
			t.Errorf("ScaledObject %s triggers on %v; the functions of %s (%s) consume from %v", so.Metadata.Name, got, d.Name, functions, want)
		}
	}
}

// The vendored permissions are the code's: base/auth.conf is what
// `orderflow authz` prints for the kustomization's PARTITIONS.
func TestVendoredPermissionsAreCurrent(t *testing.T) {
	have, err := os.ReadFile("k8s/base/auth.conf")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "run", "./functions", "authz")
	cmd.Dir, cmd.Env = "..", append(os.Environ(), "PARTITIONS=4")
	want, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(have, want) {
		t.Error("deploy/k8s/base/auth.conf is stale: run deploy/k8s/render.sh and commit the result")
	}
}
