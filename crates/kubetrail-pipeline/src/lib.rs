//! kubetrail-pipeline (being built)
