//! aienv: the Kubernetes operator for the environment AI coding agents live in.
#![forbid(unsafe_code)]

pub mod api;
pub mod backup;
pub mod conditions;
pub mod controller;
pub mod controllers;
pub mod crdgen;
pub mod embed;
pub mod memory;
pub mod plugin;
pub mod rbac;
pub mod runtime;

/// Install ring as the process-wide TLS crypto provider. kube and reqwest both use rustls; once a
/// second provider is compiled in (object storage clients bring aws-lc), rustls can no longer pick
/// one by itself, so every entry point calls this first. Calling it again is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
