//! kubetrail-pipeline (being built)

pub mod file;
