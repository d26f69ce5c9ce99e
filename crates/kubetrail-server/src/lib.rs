//! kubetrail-server (being built)
