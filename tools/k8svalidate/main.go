// Command k8svalidate checks rendered Kubernetes manifests offline, the way an API server would.
//
// For every YAML document it:
//
//  1. decodes it strictly into the typed API struct of its apiVersion/kind (unknown or duplicate
//     fields and wrong types are errors; an apiVersion/kind this tool does not know is an error);
//  2. applies the API defaults and converts it to the internal version, as the API server does;
//  3. runs the API server's own create path (rest.BeforeCreate with the resource's registry
//     strategy: PrepareForCreate, Validate, metadata validation, WarningsOnCreate), compiled in
//     from k8s.io/kubernetes at the version pinned in go.mod.
//
// Custom resources (ServiceMonitor) get step 1 against the prometheus-operator Go types only,
// plus a few structural checks, and say so in the output.
//
// After that it checks the manifests against each other (see crossChecks): Services and
// PodDisruptionBudgets select pods that some workload renders, HPAs target a rendered workload,
// ServiceMonitors select a rendered Service port, pods only use ConfigMaps/ServiceAccounts that
// exist (or are declared external), and Helm pre-install hooks do not depend on non-hook objects
// that Helm creates after them.
//
// Usage: k8svalidate [-namespace NS] [-external-sa NAME]... FILE... ("-" reads stdin)
package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	serjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	genericapirequest "k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/apiserver/pkg/registry/rest"
	"k8s.io/apiserver/pkg/warning"
	"k8s.io/kubernetes/pkg/api/legacyscheme"
	_ "k8s.io/kubernetes/pkg/apis/apps/install"
	_ "k8s.io/kubernetes/pkg/apis/autoscaling/install"
	_ "k8s.io/kubernetes/pkg/apis/batch/install"
	"k8s.io/kubernetes/pkg/apis/core"
	_ "k8s.io/kubernetes/pkg/apis/core/install"
	_ "k8s.io/kubernetes/pkg/apis/networking/install"
	_ "k8s.io/kubernetes/pkg/apis/policy/install"
	_ "k8s.io/kubernetes/pkg/apis/rbac/install"
	"k8s.io/kubernetes/pkg/registry/apps/deployment"
	"k8s.io/kubernetes/pkg/registry/autoscaling/horizontalpodautoscaler"
	"k8s.io/kubernetes/pkg/registry/batch/job"
	"k8s.io/kubernetes/pkg/registry/core/configmap"
	"k8s.io/kubernetes/pkg/registry/core/secret"
	"k8s.io/kubernetes/pkg/registry/core/service"
	"k8s.io/kubernetes/pkg/registry/core/serviceaccount"
	"k8s.io/kubernetes/pkg/registry/networking/networkpolicy"
	"k8s.io/kubernetes/pkg/registry/policy/poddisruptionbudget"
	"k8s.io/kubernetes/pkg/registry/rbac/role"
	"k8s.io/kubernetes/pkg/registry/rbac/rolebinding"
)

// Versions printed in the report; keep in step with go.mod.
const (
	kubernetesVersion  = "v1.36.3"
	promOperatorModule = "prometheus-operator/pkg/apis/monitoring v0.93.1"
)

// served lists the apiVersion/kinds a v1.36 API server serves that this tool validates, with the
// registry strategy the API server uses to create them. Anything else is rejected: a removed
// apiVersion (policy/v1beta1, autoscaling/v2beta2, ...) must not slip through.
var served = map[schema.GroupVersionKind]kindInfo{
	{Version: "v1", Kind: "ConfigMap"}:                                       {"configmaps", configmap.Strategy},
	{Version: "v1", Kind: "Secret"}:                                          {"secrets", secret.Strategy},
	{Version: "v1", Kind: "Service"}:                                         {"services", service.Strategy},
	{Version: "v1", Kind: "ServiceAccount"}:                                  {"serviceaccounts", serviceaccount.Strategy},
	{Group: "apps", Version: "v1", Kind: "Deployment"}:                       {"deployments", deployment.Strategy},
	{Group: "batch", Version: "v1", Kind: "Job"}:                             {"jobs", job.Strategy},
	{Group: "policy", Version: "v1", Kind: "PodDisruptionBudget"}:            {"poddisruptionbudgets", poddisruptionbudget.Strategy},
	{Group: "autoscaling", Version: "v2", Kind: "HorizontalPodAutoscaler"}:   {"horizontalpodautoscalers", horizontalpodautoscaler.Strategy},
	{Group: "networking.k8s.io", Version: "v1", Kind: "NetworkPolicy"}:       {"networkpolicies", networkpolicy.Strategy},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "Role"}:        {"roles", role.Strategy},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "RoleBinding"}: {"rolebindings", rolebinding.Strategy},
	// A CRD: no strategy, see checkCustomResource.
	{Group: monitoringv1.SchemeGroupVersion.Group, Version: "v1", Kind: "ServiceMonitor"}: {"servicemonitors", nil},
}

type kindInfo struct {
	resource string
	strategy rest.RESTCreateStrategy
}

// doc is one decoded manifest.
type doc struct {
	source string // file#index
	gvk    schema.GroupVersionKind
	obj    runtime.Object // versioned, typed, defaulted
}

func (d doc) name() string {
	if m, ok := d.obj.(interface{ GetName() string }); ok {
		return m.GetName()
	}
	return ""
}

func (d doc) String() string { return fmt.Sprintf("%s %s/%s", d.source, d.gvk.Kind, d.name()) }

type recorder struct{ warnings []string }

func (r *recorder) AddWarning(_, text string) { r.warnings = append(r.warnings, text) }

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func main() {
	namespace := flag.String("namespace", "default", "namespace assumed for namespaced objects that name none")
	var externalSAs, externalCMs stringList
	flag.Var(&externalSAs, "external-sa", "a ServiceAccount that exists outside the manifests (repeatable)")
	flag.Var(&externalCMs, "external-configmap", "a ConfigMap that exists outside the manifests (repeatable)")
	quiet := flag.Bool("q", false, "print only problems and the summary")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: k8svalidate [-namespace NS] [-external-sa NAME] FILE... (- for stdin)")
		os.Exit(2)
	}
	if err := monitoringv1.AddToScheme(legacyscheme.Scheme); err != nil {
		fmt.Fprintln(os.Stderr, "k8svalidate:", err)
		os.Exit(2)
	}

	var docs []doc
	problems := 0
	report := func(format string, args ...any) {
		problems++
		fmt.Printf("FAIL "+format+"\n", args...)
	}
	for _, path := range flag.Args() {
		raws, err := readDocuments(path)
		if err != nil {
			report("%s: %v", path, err)
			continue
		}
		for i, raw := range raws {
			source := fmt.Sprintf("%s#%d", path, i)
			d, warnings, errs := validate(source, raw, *namespace)
			for _, e := range errs {
				report("%s: %v", source, e)
			}
			if len(errs) > 0 {
				continue
			}
			for _, w := range warnings {
				fmt.Printf("WARN %s: %s\n", d, w)
			}
			docs = append(docs, d)
			if !*quiet {
				how := "API-server create validation (Kubernetes " + kubernetesVersion + ")"
				if served[d.gvk].strategy == nil {
					how = "strict decode against " + promOperatorModule + " types + structural checks; " +
						"no CRD schema validation (no API server)"
				}
				fmt.Printf("ok   %-60s %s\n", d.gvk.GroupVersion().String()+" "+d.gvk.Kind+" "+d.name(), how)
			}
		}
	}
	for _, e := range crossChecks(docs, externalSAs, externalCMs) {
		report("%v", e)
	}
	fmt.Printf("k8svalidate: %d objects checked, %d problems\n", len(docs), problems)
	if problems > 0 {
		os.Exit(1)
	}
}

// readDocuments splits a multi-document YAML stream, dropping empty documents.
func readDocuments(path string) ([][]byte, error) {
	var in io.Reader = os.Stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		in = f
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(in))
	var out [][]byte
	for {
		chunk, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(stripComments(chunk))) == 0 {
			continue
		}
		out = append(out, chunk)
	}
}

func stripComments(b []byte) []byte {
	var out bytes.Buffer
	for _, line := range bytes.Split(b, []byte("\n")) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out.Write(line)
			out.WriteByte('\n')
		}
	}
	return out.Bytes()
}

var strictYAML = serjson.NewSerializerWithOptions(serjson.DefaultMetaFactory, legacyscheme.Scheme,
	legacyscheme.Scheme, serjson.SerializerOptions{Yaml: true, Strict: true})

func validate(source string, raw []byte, namespace string) (doc, []string, []error) {
	d := doc{source: source}
	obj, gvk, err := strictYAML.Decode(raw, nil, nil)
	if gvk != nil {
		d.gvk = *gvk
	}
	switch {
	case err == nil:
	case runtime.IsStrictDecodingError(err):
		return d, nil, []error{fmt.Errorf("%s: %w", d.gvk.Kind, err)}
	case runtime.IsNotRegisteredError(err), runtime.IsMissingKind(err), runtime.IsMissingVersion(err):
		return d, nil, []error{fmt.Errorf("unknown apiVersion/kind %q %q: %w", d.gvk.GroupVersion(), d.gvk.Kind, err)}
	default:
		return d, nil, []error{err}
	}
	info, known := served[d.gvk]
	strategy := info.strategy
	if !known {
		return d, nil, []error{fmt.Errorf("%s %s is not served by Kubernetes %s or has no validator here "+
			"(add it to tools/k8svalidate)", d.gvk.GroupVersion(), d.gvk.Kind, kubernetesVersion)}
	}
	d.obj = obj
	if strategy == nil {
		return d, nil, checkCustomResource(obj)
	}

	legacyscheme.Scheme.Default(obj)
	internal, err := legacyscheme.Scheme.ConvertToVersion(obj, schema.GroupVersion{Group: d.gvk.Group,
		Version: runtime.APIVersionInternal})
	if err != nil {
		return d, nil, []error{fmt.Errorf("convert to internal version: %w", err)}
	}
	accessor, err := apimeta.Accessor(internal)
	if err != nil {
		return d, nil, []error{fmt.Errorf("%s has no object metadata: %w", d.gvk.Kind, err)}
	}
	ns := ""
	if strategy.NamespaceScoped() {
		ns = accessor.GetNamespace()
		if ns == "" {
			ns = namespace
			accessor.SetNamespace(ns)
		}
	}
	rec := &recorder{}
	ctx := genericapirequest.WithNamespace(context.Background(), ns)
	ctx = genericapirequest.WithRequestInfo(ctx, &genericapirequest.RequestInfo{
		IsResourceRequest: true, Verb: "create", APIPrefix: "apis", APIGroup: d.gvk.Group,
		APIVersion: d.gvk.Version, Resource: info.resource, Namespace: ns, Name: accessor.GetName(),
	})
	ctx = warning.WithWarningRecorder(ctx, rec)
	prepareLikeStorage(internal)
	// The API server's store fills uid and creationTimestamp before the create strategy runs.
	rest.FillObjectMetaSystemFields(accessor)
	if err := rest.BeforeCreate(strategy, ctx, internal); err != nil {
		return d, nil, []error{err}
	}
	sort.Strings(rec.warnings)
	return d, rec.warnings, nil
}

// prepareLikeStorage does what a resource's REST storage does before the create strategy runs,
// where that matters to validation (cluster IP allocation itself is skipped).
func prepareLikeStorage(obj runtime.Object) {
	if svc, ok := obj.(*core.Service); ok {
		// pkg/registry/core/service/storage: normalizeClusterIPs on create.
		if svc.Spec.ClusterIP != "" && len(svc.Spec.ClusterIPs) == 0 {
			svc.Spec.ClusterIPs = []string{svc.Spec.ClusterIP}
		}
	}
}

// checkCustomResource does what can be done for a CRD without its API server: the strict decode
// already happened; these are the structural rules its CRD schema states as required fields.
func checkCustomResource(obj runtime.Object) []error {
	var errs []error
	switch o := obj.(type) {
	case *monitoringv1.ServiceMonitor:
		if o.Name == "" {
			errs = append(errs, errors.New("ServiceMonitor: metadata.name is required"))
		}
		if len(o.Spec.Endpoints) == 0 {
			errs = append(errs, errors.New("ServiceMonitor: spec.endpoints must not be empty"))
		}
		for i, ep := range o.Spec.Endpoints {
			if ep.Port == "" && ep.TargetPort == nil {
				errs = append(errs, fmt.Errorf("ServiceMonitor: spec.endpoints[%d] needs port or targetPort", i))
			}
		}
	}
	return errs
}
