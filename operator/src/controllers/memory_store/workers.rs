//! The embedding workers of a MemoryStore: a Deployment running `aienv embed-worker` from the
//! operator's own image, connected as the store's agent role (its `<store>-app` Secret: DML on
//! the store's tables only) and pointed at `spec.embedding.provider`. Pure.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction,
            PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Probe, Volume,
            VolumeMount,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use kube::{Resource, ResourceExt};

use super::children::{LABEL_CLIENT, LABEL_COMPONENT, app_secret_name, child_labels, secret_env};
use crate::{
    api::memory_store::{EmbeddingProvider, EmbeddingProviderType, MemoryStore},
    backup::env::DATABASE_URL,
    controller::pods::{restricted_container_security, restricted_pod_security},
    embed::{API_KEY_ENV, MODEL_DIR_ENV, ProviderKind, report::WorkerReport},
};

pub const COMPONENT_WORKER: &str = "embedding-worker";
const HTTP_PORT: i32 = 8080;

/// Where a `modelVolume` is mounted in the workers (read-only).
pub const MODEL_MOUNT: &str = "/var/lib/aienv/model";
const MODEL_VOLUME: &str = "model";

/// The local model's directory as the worker sees it: under the volume's mount when there is
/// one (`modelDirectory` relative to its root), else `modelDirectory` in the image.
pub fn local_model_dir(provider: &EmbeddingProvider) -> String {
    let dir = provider.model_directory.as_deref().unwrap_or("");
    match &provider.model_volume {
        Some(_) => {
            let inner = dir.trim_matches('/');
            if inner.is_empty() {
                MODEL_MOUNT.to_string()
            } else {
                format!("{MODEL_MOUNT}/{inner}")
            }
        }
        None => dir.to_string(),
    }
}

pub fn deployment_name(store: &str) -> String {
    format!("{store}-embed")
}

pub(super) fn literal(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

pub(super) fn http_probe(path: &str, period: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

/// The workers' Deployment, or `None` when the store names no embedding provider (nothing to
/// send text to). `image` is the operator's own (`--job-image`).
pub fn deployment(store: &MemoryStore, image: &str) -> Option<Deployment> {
    let provider = store.spec.embedding.provider.as_ref()?;
    let name = store.name_any();
    let workers = &store.spec.workers;
    let mut selector = child_labels(&name);
    selector.insert(LABEL_COMPONENT.into(), COMPONENT_WORKER.into());
    // Labelled as a client of the store, so the managed store's NetworkPolicy admits it.
    let mut pod_labels: BTreeMap<String, String> = selector.clone();
    pod_labels.insert(LABEL_CLIENT.into(), name.clone());
    let protocol = ProviderKind::of(provider.type_).name();
    let app = app_secret_name(&name);
    let mut env = vec![
        secret_env(DATABASE_URL, &app, "uri"),
        secret_env("AIENV_STORE_SCHEMA", &app, "schema"),
        literal("AIENV_EMBED_PROVIDER", protocol),
        literal("AIENV_EMBED_MODEL", store.spec.embedding.model.clone()),
        literal("AIENV_EMBED_BATCH_SIZE", workers.batch_size.to_string()),
        literal("AIENV_HTTP_ADDR", format!("0.0.0.0:{HTTP_PORT}")),
        literal("RUST_LOG", "info"),
    ];
    // The operator's own server when the store runs one and names no other URL.
    let url = provider.url.clone().or_else(|| {
        store
            .spec
            .embedding
            .server
            .as_ref()
            .map(|_| super::server::server_url(store))
    });
    if let Some(url) = url {
        env.push(literal("AIENV_EMBED_BASE_URL", url));
    }
    if let Some(r) = &provider.secret_ref {
        env.push(secret_env(API_KEY_ENV, &r.name, &r.key));
    }
    let mut mounts = vec![VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
        ..Default::default()
    }];
    let mut volumes = vec![Volume {
        name: "tmp".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    if provider.type_ == EmbeddingProviderType::Local {
        env.push(literal(MODEL_DIR_ENV, local_model_dir(provider)));
        if let Some(v) = &provider.model_volume {
            mounts.push(VolumeMount {
                name: MODEL_VOLUME.into(),
                mount_path: MODEL_MOUNT.into(),
                read_only: Some(true),
                ..Default::default()
            });
            volumes.push(Volume {
                name: MODEL_VOLUME.into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: v.claim_name.clone(),
                    read_only: Some(true),
                }),
                ..Default::default()
            });
        }
    }
    let mut labels = child_labels(&name);
    labels.insert(LABEL_COMPONENT.into(), COMPONENT_WORKER.into());
    Some(Deployment {
        metadata: ObjectMeta {
            name: Some(deployment_name(&name)),
            namespace: store.namespace(),
            labels: Some(labels),
            owner_references: store.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(workers.replicas),
            selector: LabelSelector {
                match_labels: Some(selector),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    // The workers talk to the database and the provider, never the API server.
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(restricted_pod_security()),
                    // SIGTERM: the batch under way finishes or is released within its grace.
                    termination_grace_period_seconds: Some(30),
                    containers: vec![Container {
                        name: "worker".into(),
                        image: Some(image.into()),
                        image_pull_policy: Some("IfNotPresent".into()),
                        args: Some(vec!["embed-worker".into()]),
                        env: Some(env),
                        ports: Some(vec![ContainerPort {
                            name: Some("http".into()),
                            container_port: HTTP_PORT,
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        }]),
                        liveness_probe: Some(http_probe("/healthz", 10)),
                        readiness_probe: Some(http_probe("/readyz", 5)),
                        resources: workers.resources.clone(),
                        security_context: Some(restricted_container_security()),
                        volume_mounts: Some(mounts),
                        ..Default::default()
                    }],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    })
}

/// How far the workers are, from the Deployment the API server holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkersState {
    /// Not looked at this time (the database is not prepared): the condition stays as it was.
    NotObserved,
    /// No provider: there are no workers, and no condition.
    NotConfigured,
    Scaled {
        desired: i32,
        available: i32,
        /// What the running workers last found (`aienv_embed_workers`), by worker name.
        reports: Vec<WorkerReport>,
    },
    /// An object of the Deployment's name that the operator did not create.
    Conflict(String),
}

pub fn state(applied: &Deployment, reports: Vec<WorkerReport>) -> WorkersState {
    let desired = applied.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = applied.status.clone().unwrap_or_default();
    // A rollout is current only once the controller has seen this generation.
    let current = status.observed_generation >= applied.metadata.generation;
    WorkersState::Scaled {
        desired,
        available: if current {
            status.available_replicas.unwrap_or(0)
        } else {
            0
        },
        reports,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(extra: &str) -> MemoryStore {
        let mut s: MemoryStore = serde_saphyr::from_str(&format!(
            "apiVersion: aienv.orchestr8.io/v1alpha1\nkind: MemoryStore\nmetadata: {{name: mem, namespace: team, uid: u1}}\nspec:\n  mode: external\n  external: {{connectionSecretRef: {{name: db, key: uri}}}}\n{extra}"
        ))
        .unwrap();
        s.metadata.uid = Some("u1".into());
        s
    }

    fn env_of(d: &Deployment) -> BTreeMap<String, EnvVar> {
        d.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .env
            .clone()
            .unwrap()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect()
    }

    #[test]
    fn no_provider_no_workers() {
        assert!(deployment(&store(""), "aienv:1").is_none());
    }

    #[test]
    fn the_worker_runs_the_operators_image_as_the_agent_role_against_the_provider() {
        let s = store(
            "  embedding:\n    dimensions: 384\n    model: all-minilm\n    provider: {type: tei, url: 'http://tei.models.svc', secretRef: {name: tei-key, key: token}}\n  workers: {replicas: 3, batchSize: 16}\n",
        );
        let d = deployment(&s, "registry.invalid/aienv:1").unwrap();
        assert_eq!(d.metadata.name.as_deref(), Some("mem-embed"));
        let spec = d.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(3));
        let pod = spec.template.spec.as_ref().unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("registry.invalid/aienv:1"));
        assert_eq!(c.args.as_deref(), Some(&["embed-worker".to_string()][..]));
        let env = env_of(&d);
        let secret = |n: &str| {
            let r = env[n]
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .clone()
                .unwrap();
            (r.name, r.key)
        };
        assert_eq!(secret(DATABASE_URL), ("mem-app".into(), "uri".into()));
        assert_eq!(
            secret("AIENV_STORE_SCHEMA"),
            ("mem-app".into(), "schema".into())
        );
        assert_eq!(secret(API_KEY_ENV), ("tei-key".into(), "token".into()));
        let value = |n: &str| env[n].value.clone().unwrap();
        assert_eq!(value("AIENV_EMBED_PROVIDER"), "openai");
        assert_eq!(value("AIENV_EMBED_BASE_URL"), "http://tei.models.svc");
        assert_eq!(value("AIENV_EMBED_MODEL"), "all-minilm");
        assert_eq!(value("AIENV_EMBED_BATCH_SIZE"), "16");
        // Restricted, no token, admitted by the store's NetworkPolicy.
        assert_eq!(pod.automount_service_account_token, Some(false));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        let labels = spec
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap();
        assert_eq!(labels[LABEL_CLIENT], "mem");
        // The selector never includes the client label (it must not change across versions).
        let sel = spec.selector.match_labels.clone().unwrap();
        assert!(!sel.contains_key(LABEL_CLIENT));
        assert!(sel.iter().all(|(k, v)| labels.get(k) == Some(v)));
    }

    #[test]
    fn ollama_speaks_its_own_protocol_and_needs_no_key() {
        let s = store(
            "  embedding:\n    provider: {type: ollama, url: 'http://ollama.models.svc:11434'}\n",
        );
        let env = env_of(&deployment(&s, "aienv:1").unwrap());
        assert_eq!(env["AIENV_EMBED_PROVIDER"].value.as_deref(), Some("ollama"));
        assert!(!env.contains_key(API_KEY_ENV));
    }

    #[test]
    fn a_local_model_comes_from_a_read_only_claim_or_the_image() {
        let s = store(
            "  embedding:\n    dimensions: 384\n    model: all-MiniLM-L6-v2\n    provider: {type: local, modelVolume: {claimName: models}, modelDirectory: minilm/}\n",
        );
        let d = deployment(&s, "aienv:1").unwrap();
        let env = env_of(&d);
        assert_eq!(env["AIENV_EMBED_PROVIDER"].value.as_deref(), Some("local"));
        assert_eq!(
            env[MODEL_DIR_ENV].value.as_deref(),
            Some("/var/lib/aienv/model/minilm")
        );
        assert!(!env.contains_key("AIENV_EMBED_BASE_URL"));
        let pod = d.spec.unwrap().template.spec.unwrap();
        let claim = pod
            .volumes
            .unwrap()
            .into_iter()
            .find_map(|v| v.persistent_volume_claim)
            .unwrap();
        assert_eq!(
            (claim.claim_name.as_str(), claim.read_only),
            ("models", Some(true))
        );
        let mount = pod.containers[0]
            .volume_mounts
            .clone()
            .unwrap()
            .into_iter()
            .find(|m| m.mount_path == MODEL_MOUNT)
            .unwrap();
        assert_eq!(mount.read_only, Some(true));

        // Baked into a derived image: the path as given, no volume.
        let s = store(
            "  embedding:\n    provider: {type: local, modelDirectory: /opt/models/minilm}\n",
        );
        let d = deployment(&s, "aienv:1").unwrap();
        assert_eq!(
            env_of(&d)[MODEL_DIR_ENV].value.as_deref(),
            Some("/opt/models/minilm")
        );
        let pod = d.spec.unwrap().template.spec.unwrap();
        assert!(
            pod.volumes
                .unwrap()
                .iter()
                .all(|v| v.persistent_volume_claim.is_none())
        );
    }

    #[test]
    fn availability_counts_only_for_the_current_generation() {
        let mut d = Deployment::default();
        d.metadata.generation = Some(2);
        d.spec = Some(DeploymentSpec {
            replicas: Some(2),
            ..Default::default()
        });
        d.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
            observed_generation: Some(1),
            available_replicas: Some(2),
            ..Default::default()
        });
        assert_eq!(
            state(&d, vec![]),
            WorkersState::Scaled {
                desired: 2,
                available: 0,
                reports: vec![]
            }
        );
        d.status.as_mut().unwrap().observed_generation = Some(2);
        assert_eq!(
            state(&d, vec![]),
            WorkersState::Scaled {
                desired: 2,
                available: 2,
                reports: vec![]
            }
        );
    }
}
