//! gpufed e2e harness: real control planes (etcd, kube-apiserver, scheduler, controller-manager) and a GPU node simulator.
