package kubernetes

import (
	"bytes"
	"context"
	_ "embed"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
)

// RBAC is the manifest of the router's namespace, ServiceAccount and
// rights (kubectl apply -f router/kubernetes/rbac.yaml on any cluster).
//
//go:embed rbac.yaml
var RBAC []byte

// Namespace and ServiceAccount of the router in RBAC.
const (
	RouterNamespace      = "upc"
	RouterServiceAccount = "upc-router"
)

// ApplyRBAC creates the objects of RBAC that do not exist yet.
func ApplyRBAC(ctx context.Context, cs kubernetes.Interface) error {
	for doc := range bytes.SplitSeq(RBAC, []byte("\n---\n")) {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return fmt.Errorf("rbac manifest: %w", err)
		}
		if err := create(ctx, cs, obj); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("apply rbac: %w", err)
		}
	}
	return nil
}

func create(ctx context.Context, cs kubernetes.Interface, obj runtime.Object) error {
	o := metav1.CreateOptions{}
	var err error
	switch x := obj.(type) {
	case *corev1.Namespace:
		_, err = cs.CoreV1().Namespaces().Create(ctx, x, o)
	case *corev1.ServiceAccount:
		_, err = cs.CoreV1().ServiceAccounts(x.Namespace).Create(ctx, x, o)
	case *rbacv1.Role:
		_, err = cs.RbacV1().Roles(x.Namespace).Create(ctx, x, o)
	case *rbacv1.RoleBinding:
		_, err = cs.RbacV1().RoleBindings(x.Namespace).Create(ctx, x, o)
	case *rbacv1.ClusterRole:
		_, err = cs.RbacV1().ClusterRoles().Create(ctx, x, o)
	case *rbacv1.ClusterRoleBinding:
		_, err = cs.RbacV1().ClusterRoleBindings().Create(ctx, x, o)
	default:
		err = fmt.Errorf("rbac manifest: unexpected %T", obj)
	}
	return err
}

// Rules are the router's rights as RBAC states them: the Role's rules (in
// its namespace) and the ClusterRole's. Deployments that make their own
// RBAC objects (infra/) take the rules from here, so there is one statement
// of what the router may do.
func Rules() (role, cluster []rbacv1.PolicyRule, err error) {
	for doc := range bytes.SplitSeq(RBAC, []byte("\n---\n")) {
		obj, _, err := scheme.Codecs.UniversalDeserializer().Decode(doc, nil, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("rbac manifest: %w", err)
		}
		switch x := obj.(type) {
		case *rbacv1.Role:
			role = append(role, x.Rules...)
		case *rbacv1.ClusterRole:
			cluster = append(cluster, x.Rules...)
		}
	}
	if len(role) == 0 || len(cluster) == 0 {
		return nil, nil, fmt.Errorf("rbac manifest: no Role or no ClusterRole rules")
	}
	return role, cluster, nil
}
