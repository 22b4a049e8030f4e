//! The in-cluster embedding server of a MemoryStore (`spec.embedding.server`): a Deployment of a
//! text-embeddings-inference or Ollama image serving the store's model, and a Service the
//! workers are pointed at when `provider.url` is unset. Pure.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        apps::v1::{Deployment, DeploymentSpec},
        core::v1::{
            Container, ContainerPort, EmptyDirVolumeSource, PersistentVolumeClaimVolumeSource,
            PodSpec, PodTemplateSpec, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
        },
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use kube::{Resource, ResourceExt};

use super::{
    children::{LABEL_COMPONENT, child_labels},
    workers::{http_probe, literal},
};
use crate::{
    api::memory_store::{EmbeddingProviderType, EmbeddingServer, MemoryStore},
    controller::pods::{restricted_container_security, restricted_pod_security},
};

pub const COMPONENT_SERVER: &str = "embedding-server";
/// The Service's port (the workers' URL has none).
const SERVICE_PORT: i32 = 80;
/// The server's writable home (an emptyDir: the root filesystem is read-only).
const DATA: &str = "/data";
/// Where it keeps its models: in the home, or `server.modelVolume`'s claim mounted over it.
const MODELS: &str = "/data/models";

pub fn server_name(store: &str) -> String {
    format!("{store}-embed-server")
}

/// The URL the workers reach the server at: the Service's cluster DNS name.
pub fn server_url(store: &MemoryStore) -> String {
    format!(
        "http://{}.{}.svc",
        server_name(&store.name_any()),
        store.namespace().unwrap_or_default()
    )
}

/// How each server image is run: its port, command (the image's own when `None`), args, env and
/// health path.
struct Flavour {
    port: i32,
    command: Option<Vec<String>>,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    ready_path: &'static str,
}

fn flavour(t: EmbeddingProviderType, model: &str) -> Option<Flavour> {
    match t {
        // The image's entrypoint is text-embeddings-router.
        EmbeddingProviderType::Tei => Some(Flavour {
            port: 8080,
            command: None,
            args: vec![
                "--model-id".into(),
                model.into(),
                "--port".into(),
                "8080".into(),
                // Texts past the model's limit are cut, not refused (docs/embedding.md).
                "--auto-truncate".into(),
            ],
            env: vec![
                ("HUGGINGFACE_HUB_CACHE", MODELS.into()),
                ("HOME", DATA.into()),
            ],
            ready_path: "/health",
        }),
        // `ollama serve` answers before the model is there; once it listens the model is pulled
        // unless the models directory (a seeded modelVolume) has it, and the readiness path
        // lists the models, so a pod is ready once Ollama serves.
        // The model goes in through the environment, never spliced into the shell line.
        EmbeddingProviderType::Ollama => Some(Flavour {
            port: 11434,
            command: Some(vec!["/bin/sh".into(), "-c".into()]),
            args: vec![
                "ollama serve & until ollama list >/dev/null 2>&1; do sleep 1; done; ollama show \"$AIENV_OLLAMA_MODEL\" >/dev/null 2>&1 || ollama pull \"$AIENV_OLLAMA_MODEL\"; wait".into(),
            ],
            env: vec![
                ("OLLAMA_HOST", "0.0.0.0:11434".into()),
                ("OLLAMA_MODELS", MODELS.into()),
                ("HOME", DATA.into()),
                ("AIENV_OLLAMA_MODEL", model.into()),
            ],
            ready_path: "/api/tags",
        }),
        EmbeddingProviderType::Openai | EmbeddingProviderType::Local => None,
    }
}

fn selector(store: &str) -> BTreeMap<String, String> {
    let mut s = child_labels(store);
    s.insert(LABEL_COMPONENT.into(), COMPONENT_SERVER.into());
    s
}

fn meta(store: &MemoryStore) -> ObjectMeta {
    let name = store.name_any();
    ObjectMeta {
        name: Some(server_name(&name)),
        namespace: store.namespace(),
        labels: Some(selector(&name)),
        owner_references: store.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    }
}

/// The server's Deployment and Service, or `None` without `embedding.server` (admission only
/// lets a server go with a tei or ollama provider).
pub fn server(store: &MemoryStore) -> Option<(Deployment, Service)> {
    let server: &EmbeddingServer = store.spec.embedding.server.as_ref()?;
    let provider = store.spec.embedding.provider.as_ref()?;
    let model = server
        .model
        .clone()
        .unwrap_or_else(|| store.spec.embedding.model.clone());
    let f = flavour(provider.type_, &model)?;
    let name = store.name_any();
    let env: Vec<_> = f.env.iter().map(|(k, v)| literal(k, v.clone())).collect();
    let mut volumes = vec![Volume {
        name: "data".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "data".into(),
        mount_path: DATA.into(),
        ..Default::default()
    }];
    if let Some(v) = &server.model_volume {
        volumes.push(Volume {
            name: "models".into(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: v.claim_name.clone(),
                read_only: None,
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "models".into(),
            mount_path: MODELS.into(),
            ..Default::default()
        });
    }
    let deployment = Deployment {
        metadata: meta(store),
        spec: Some(DeploymentSpec {
            replicas: Some(server.replicas),
            selector: LabelSelector {
                match_labels: Some(selector(&name)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(selector(&name)),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(restricted_pod_security()),
                    containers: vec![Container {
                        name: "server".into(),
                        image: Some(server.image.clone()),
                        image_pull_policy: Some("IfNotPresent".into()),
                        command: f.command,
                        args: Some(f.args),
                        env: Some(env),
                        ports: Some(vec![ContainerPort {
                            name: Some("http".into()),
                            container_port: f.port,
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        }]),
                        readiness_probe: Some(http_probe(f.ready_path, 10)),
                        resources: server.resources.clone(),
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
    };
    let service = Service {
        metadata: meta(store),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector(&name)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: SERVICE_PORT,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    Some((deployment, service))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(embedding: &str) -> MemoryStore {
        let mut s: MemoryStore = serde_saphyr::from_str(&format!(
            "apiVersion: aienv.orchestr8.io/v1alpha1\nkind: MemoryStore\nmetadata: {{name: mem, namespace: team}}\nspec:\n  mode: external\n  external: {{connectionSecretRef: {{name: db, key: uri}}}}\n  embedding:\n{embedding}"
        ))
        .unwrap();
        s.metadata.uid = Some("u1".into());
        s
    }

    #[test]
    fn tei_serves_the_stores_model_behind_a_service() {
        let s = store(
            "    dimensions: 384\n    model: BAAI/bge-small-en-v1.5\n    provider: {type: tei}\n    server: {image: 'tei:cpu-1.8', replicas: 2}\n",
        );
        let (d, svc) = server(&s).unwrap();
        assert_eq!(d.metadata.name.as_deref(), Some("mem-embed-server"));
        let spec = d.spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        let pod = spec.template.spec.unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("tei:cpu-1.8"));
        let args = c.args.clone().unwrap();
        assert_eq!(&args[..2], ["--model-id", "BAAI/bge-small-en-v1.5"]);
        assert!(args.contains(&"--auto-truncate".to_string()));
        assert_eq!(c.ports.as_ref().unwrap()[0].container_port, 8080);
        assert_eq!(
            c.security_context
                .as_ref()
                .unwrap()
                .read_only_root_filesystem,
            Some(true)
        );
        // The Service selects exactly the server's pods.
        let sel = svc.spec.unwrap().selector.unwrap();
        let labels = spec.template.metadata.unwrap().labels.unwrap();
        assert!(sel.iter().all(|(k, v)| labels.get(k) == Some(v)));
        assert_eq!(sel[LABEL_COMPONENT], COMPONENT_SERVER);
        assert_eq!(server_url(&s), "http://mem-embed-server.team.svc");
    }

    #[test]
    fn ollama_pulls_the_model_it_serves_unless_its_volume_has_it() {
        let s = store(
            "    model: nomic-embed-text\n    provider: {type: ollama}\n    server: {image: 'ollama:0.12', modelVolume: {claimName: ollama-models}}\n",
        );
        let (d, _) = server(&s).unwrap();
        let pod = d.spec.unwrap().template.spec.unwrap();
        let c = pod.containers[0].clone();
        let line = &c.args.as_ref().unwrap()[0];
        assert!(
            line.contains("ollama show \"$AIENV_OLLAMA_MODEL\" >/dev/null 2>&1 || ollama pull"),
            "{line}"
        );
        let claim = pod.volumes.unwrap()[1]
            .persistent_volume_claim
            .clone()
            .unwrap();
        assert_eq!(claim.claim_name, "ollama-models");
        let mount = &c.volume_mounts.as_ref().unwrap()[1];
        assert_eq!((mount.name.as_str(), mount.read_only), ("models", None));
        assert_eq!(mount.mount_path, "/data/models");
        let env: BTreeMap<String, String> = c
            .env
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.value.unwrap_or_default()))
            .collect();
        assert_eq!(env["AIENV_OLLAMA_MODEL"], "nomic-embed-text");
        assert_eq!(env["OLLAMA_MODELS"], "/data/models");
    }

    #[test]
    fn no_server_without_the_field() {
        assert!(server(&store("    provider: {type: tei, url: 'http://tei'}\n")).is_none());
    }
}
