package main

import (
	"fmt"
	"strconv"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// workload is a pod template some controller renders.
type workload struct {
	ref  string
	meta metav1.ObjectMeta // the controller's metadata (hook annotations live here)
	pod  corev1.PodTemplateSpec
}

const hookAnnotation = "helm.sh/hook"

// crossChecks finds manifests that are each valid but do not fit together.
func crossChecks(docs []doc, externalSAs, externalCMs []string) []error {
	var (
		errs        []error
		workloads   []workload
		services    []*corev1.Service
		configMaps  = map[string]*corev1.ConfigMap{}
		accounts    = map[string]metav1.ObjectMeta{}
		hookObjects = map[string]metav1.ObjectMeta{} // "Kind/name" -> metadata of rendered objects
	)
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	for _, d := range docs {
		switch o := d.obj.(type) {
		case *appsv1.Deployment:
			workloads = append(workloads, workload{d.String(), o.ObjectMeta, o.Spec.Template})
		case *batchv1.Job:
			workloads = append(workloads, workload{d.String(), o.ObjectMeta, o.Spec.Template})
		case *corev1.Service:
			services = append(services, o)
		case *corev1.ConfigMap:
			configMaps[o.Name] = o
			hookObjects["ConfigMap/"+o.Name] = o.ObjectMeta
		case *corev1.ServiceAccount:
			accounts[o.Name] = o.ObjectMeta
			hookObjects["ServiceAccount/"+o.Name] = o.ObjectMeta
		}
	}
	for _, name := range externalSAs {
		accounts[name] = metav1.ObjectMeta{Name: name}
	}
	matching := func(sel labels.Selector) []workload {
		var out []workload
		for _, w := range workloads {
			if sel.Matches(labels.Set(w.pod.Labels)) {
				out = append(out, w)
			}
		}
		return out
	}

	// Pods only use what exists; pre-install hooks only use what exists before them.
	for _, w := range workloads {
		spec := w.pod.Spec
		refs := map[string]bool{} // "Kind/name" this pod needs to exist
		sa := spec.ServiceAccountName
		if sa != "" && sa != "default" {
			if _, ok := accounts[sa]; !ok {
				fail("%s: serviceAccountName %q is neither rendered nor declared external (-external-sa)", w.ref, sa)
			}
			refs["ServiceAccount/"+sa] = true
		}
		useConfigMap := func(name, key string, optional *bool, where string) {
			if optional != nil && *optional {
				return
			}
			cm, ok := configMaps[name]
			if !ok {
				if !contains(externalCMs, name) {
					fail("%s: %s uses ConfigMap %q that is not rendered (and not optional)", w.ref, where, name)
				}
				return
			}
			refs["ConfigMap/"+name] = true
			if key != "" {
				if _, ok := cm.Data[key]; !ok {
					fail("%s: %s uses key %q that ConfigMap %q does not have", w.ref, where, key, name)
				}
			}
		}
		for _, c := range append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...) {
			for _, ef := range c.EnvFrom {
				if ef.ConfigMapRef != nil {
					useConfigMap(ef.ConfigMapRef.Name, "", ef.ConfigMapRef.Optional, "container "+c.Name+" envFrom")
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
					r := e.ValueFrom.ConfigMapKeyRef
					useConfigMap(r.Name, r.Key, r.Optional, "container "+c.Name+" env "+e.Name)
				}
			}
		}
		for _, v := range spec.Volumes {
			if v.ConfigMap != nil {
				useConfigMap(v.ConfigMap.Name, "", v.ConfigMap.Optional, "volume "+v.Name)
			}
		}
		if events, ok := w.meta.Annotations[hookAnnotation]; ok && hasEvent(events, "pre-install") {
			weight := hookWeight(w.meta)
			for ref := range refs {
				m, rendered := hookObjects[ref]
				if !rendered {
					continue // external: exists before the release
				}
				other, isHook := m.Annotations[hookAnnotation]
				switch {
				case !isHook || !hasEvent(other, "pre-install"):
					fail("%s: pre-install hook uses %s, which Helm creates only after pre-install hooks ran", w.ref, ref)
				case hookWeight(m) > weight:
					fail("%s: pre-install hook (weight %d) uses %s, a hook with a higher weight (%d)",
						w.ref, weight, ref, hookWeight(m))
				}
			}
		}
	}

	// Services route to rendered pods and named ports.
	servicePorts := map[string][]corev1.ServicePort{}
	for _, s := range services {
		servicePorts[s.Name] = s.Spec.Ports
		if len(s.Spec.Selector) == 0 {
			continue
		}
		pods := matching(labels.SelectorFromSet(s.Spec.Selector))
		if len(pods) == 0 {
			fail("Service %s: selector %v matches no rendered pod template", s.Name, s.Spec.Selector)
			continue
		}
		for _, p := range s.Spec.Ports {
			if !anyPodHasPort(pods, p.TargetPort) {
				fail("Service %s: port %q targets %s, which no selected pod template declares", s.Name, p.Name,
					p.TargetPort.String())
			}
		}
	}

	for _, d := range docs {
		switch o := d.obj.(type) {
		case *policyv1.PodDisruptionBudget:
			sel, err := metav1.LabelSelectorAsSelector(o.Spec.Selector)
			if err == nil && len(matching(sel)) == 0 {
				fail("%s: selector matches no rendered pod template", d)
			}
		case *networkingv1.NetworkPolicy:
			sel, err := metav1.LabelSelectorAsSelector(&o.Spec.PodSelector)
			if err == nil && len(matching(sel)) == 0 {
				fail("%s: podSelector matches no rendered pod template", d)
			}
		case *autoscalingv2.HorizontalPodAutoscaler:
			ref := o.Spec.ScaleTargetRef
			found := false
			for _, w := range workloads {
				if strings.HasSuffix(w.ref, " "+ref.Kind+"/"+ref.Name) {
					found = true
				}
			}
			if !found {
				fail("%s: scaleTargetRef %s/%s is not rendered", d, ref.Kind, ref.Name)
			}
		case *monitoringv1.ServiceMonitor:
			sel, err := metav1.LabelSelectorAsSelector(&o.Spec.Selector)
			if err != nil {
				fail("%s: selector: %v", d, err)
				continue
			}
			var selected []*corev1.Service
			for _, s := range services {
				if sel.Matches(labels.Set(s.Labels)) {
					selected = append(selected, s)
				}
			}
			if len(selected) == 0 {
				fail("%s: selector matches no rendered Service", d)
			}
			for _, ep := range o.Spec.Endpoints {
				if ep.Port == "" {
					continue
				}
				for _, s := range selected {
					if !servicePortNamed(s.Spec.Ports, ep.Port) {
						fail("%s: endpoint port %q is not a port of selected Service %s", d, ep.Port, s.Name)
					}
				}
			}
		}
	}
	return errs
}

func anyPodHasPort(pods []workload, target intstr.IntOrString) bool {
	for _, w := range pods {
		for _, c := range w.pod.Spec.Containers {
			for _, p := range c.Ports {
				if (target.Type == intstr.String && p.Name == target.StrVal) ||
					(target.Type == intstr.Int && p.ContainerPort == target.IntVal) {
					return true
				}
			}
		}
	}
	return false
}

func servicePortNamed(ports []corev1.ServicePort, name string) bool {
	for _, p := range ports {
		if p.Name == name {
			return true
		}
	}
	return false
}

func hasEvent(events, event string) bool {
	for _, e := range strings.Split(events, ",") {
		if strings.TrimSpace(e) == event {
			return true
		}
	}
	return false
}

func hookWeight(m metav1.ObjectMeta) int {
	w, err := strconv.Atoi(strings.TrimSpace(m.Annotations["helm.sh/hook-weight"]))
	if err != nil {
		return 0
	}
	return w
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
