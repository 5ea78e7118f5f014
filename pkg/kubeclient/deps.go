package kubeclient
import (
 _ "k8s.io/client-go/kubernetes"
 _ "k8s.io/client-go/tools/clientcmd"
 _ "k8s.io/api/authentication/v1"
 _ "sigs.k8s.io/yaml"
)
