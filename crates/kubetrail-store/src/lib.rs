//! kubetrail-store (being built)
