//! aienv: the Kubernetes operator for the environment AI coding agents live in.
#![forbid(unsafe_code)]

pub mod api;
pub mod conditions;
pub mod controller;
pub mod controllers;
pub mod crdgen;
pub mod runtime;
