//! A deterministic (seeded) generator of realistic kube-apiserver audit traffic.
