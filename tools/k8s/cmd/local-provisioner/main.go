// Command local-provisioner is the test node's dynamic volume provisioner: for every PVC of a
// StorageClass whose provisioner is ours it creates a hostPath PersistentVolume in a directory
// under -root, pre-bound to the claim; when a Delete-policy volume is released it removes the
// directory and the PV. One node, so no topology: the directory is on that node.
//
// It polls (list every -interval) instead of running informers: the test cluster holds a handful
// of claims, and a poll loop has no resync or watch-expiry cases to get wrong.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

const provisionedBy = "pv.kubernetes.io/provisioned-by"

func main() {
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the cluster")
	root := flag.String("root", "", "directory that holds the volumes")
	name := flag.String("provisioner", "aienv.local/hostpath", "provisioner name StorageClasses refer to")
	interval := flag.Duration("interval", 500*time.Millisecond, "poll interval")
	flag.Parse()
	if *kubeconfig == "" || *root == "" {
		log.Fatal("-kubeconfig and -root are required")
	}
	config, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		log.Fatalf("kubeconfig: %v", err)
	}
	client := kubernetes.NewForConfigOrDie(config)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	p := provisioner{client: client, root: *root, name: *name}
	for ctx.Err() == nil {
		if err := p.sync(ctx); err != nil && ctx.Err() == nil {
			log.Printf("sync: %v", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(*interval):
		}
	}
}

type provisioner struct {
	client kubernetes.Interface
	root   string
	name   string
}

func (p provisioner) sync(ctx context.Context) error {
	classes, err := p.client.StorageV1().StorageClasses().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	ours := map[string]storagev1.StorageClass{}
	for _, c := range classes.Items {
		if c.Provisioner == p.name {
			ours[c.Name] = c
		}
	}
	claims, err := p.client.CoreV1().PersistentVolumeClaims("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range claims.Items {
		claim := &claims.Items[i]
		if claim.Spec.StorageClassName == nil || claim.Spec.VolumeName != "" || claim.DeletionTimestamp != nil {
			continue
		}
		class, ok := ours[*claim.Spec.StorageClassName]
		if !ok {
			continue
		}
		// WaitForFirstConsumer: provision once the scheduler picked the node.
		if class.VolumeBindingMode != nil && *class.VolumeBindingMode == storagev1.VolumeBindingWaitForFirstConsumer &&
			claim.Annotations["volume.kubernetes.io/selected-node"] == "" {
			continue
		}
		if err := p.provision(ctx, claim, class); err != nil {
			log.Printf("provision %s/%s: %v", claim.Namespace, claim.Name, err)
		}
	}
	volumes, err := p.client.CoreV1().PersistentVolumes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range volumes.Items {
		pv := &volumes.Items[i]
		if pv.Annotations[provisionedBy] != p.name || pv.Status.Phase != corev1.VolumeReleased ||
			pv.Spec.PersistentVolumeReclaimPolicy != corev1.PersistentVolumeReclaimDelete {
			continue
		}
		if err := p.remove(ctx, pv); err != nil {
			log.Printf("delete %s: %v", pv.Name, err)
		}
	}
	return nil
}

func (p provisioner) provision(ctx context.Context, claim *corev1.PersistentVolumeClaim, class storagev1.StorageClass) error {
	name := "pvc-" + string(claim.UID)
	dir := filepath.Join(p.root, name)
	// World-writable like other local-path provisioners: hostPath volumes get no fsGroup, and
	// pods run as arbitrary non-root users.
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return err
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		return err
	}
	reclaim := corev1.PersistentVolumeReclaimDelete
	if class.ReclaimPolicy != nil {
		reclaim = *class.ReclaimPolicy
	}
	hostPathType := corev1.HostPathDirectory
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{provisionedBy: p.name},
		},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: claim.Spec.Resources.Requests[corev1.ResourceStorage]},
			AccessModes:                   claim.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: reclaim,
			StorageClassName:              class.Name,
			VolumeMode:                    claim.Spec.VolumeMode,
			ClaimRef: &corev1.ObjectReference{
				Kind: "PersistentVolumeClaim", APIVersion: "v1",
				Namespace: claim.Namespace, Name: claim.Name, UID: claim.UID,
			},
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: &hostPathType},
			},
		},
	}
	_, err := p.client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	if err == nil {
		log.Printf("provisioned %s for %s/%s at %s", name, claim.Namespace, claim.Name, dir)
	}
	return err
}

func (p provisioner) remove(ctx context.Context, pv *corev1.PersistentVolume) error {
	if pv.Spec.HostPath == nil {
		return fmt.Errorf("not a hostPath volume")
	}
	dir := filepath.Clean(pv.Spec.HostPath.Path)
	if filepath.Dir(dir) != filepath.Clean(p.root) {
		return fmt.Errorf("%s is outside %s: not deleting it", dir, p.root)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	err := p.client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err == nil {
		log.Printf("deleted %s and %s", pv.Name, dir)
	}
	return err
}
