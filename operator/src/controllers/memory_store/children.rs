//! The Kubernetes objects a MemoryStore owns, built from its spec. Pure: no client, no IO.
//!
//! Labels (documented in docs/memory-store.md):
//! - every child: `app.kubernetes.io/managed-by=aienv-operator`, `aienv.orchestr8.io/store=<name>`;
//! - the PostgreSQL pod additionally `app.kubernetes.io/component=memory-store-db`;
//! - clients admitted by the NetworkPolicy: pods labelled `aienv.orchestr8.io/memory-store=<name>`
//!   (embedding workers, backup jobs, agents of environments referencing the store) in the store's
//!   namespace, and the operator (`app.kubernetes.io/name=aienv-operator`) from any namespace.

use std::collections::BTreeMap;

use k8s_openapi::{
    ByteString,
    api::{
        apps::v1::{StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec},
        core::v1::{
            Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
            ExecAction, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext,
            PodSpec, PodTemplateSpec, Probe, SeccompProfile, Secret, SecretKeySelector,
            SecurityContext, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
            VolumeResourceRequirements,
        },
        networking::v1::{
            NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
            NetworkPolicySpec,
        },
    },
    apimachinery::pkg::{
        api::resource::Quantity,
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::{
    Resource, ResourceExt,
    api::{ApiResource, DynamicObject, GroupVersionKind},
};

use crate::api::memory_store::{
    CloudNativePgSpec, DeletionPolicy, ManagedSpec, MemoryStore, default_pg_image,
};
pub use crate::controller::children::Lifetime;

pub const LABEL_STORE: &str = "aienv.orchestr8.io/store";
pub const LABEL_CLIENT: &str = "aienv.orchestr8.io/memory-store";
pub use crate::controller::labels::{
    LABEL_COMPONENT, LABEL_MANAGED_BY, MANAGED_BY, OPERATOR_LABEL,
};
pub const COMPONENT_DB: &str = "memory-store-db";

pub const PG_PORT: u16 = crate::controller::labels::POSTGRES_PORT;
pub const PG_USER: &str = "aienv";
pub const PG_DATABASE: &str = "memory";
const PG_UID: i64 = 999;
const DATA_MOUNT: &str = "/var/lib/postgresql";

/// CloudNativePG default image: PostgreSQL 18 with pgvector (the "standard" image family).
pub const DEFAULT_CNPG_IMAGE: &str = "ghcr.io/cloudnative-pg/postgresql:18-standard-trixie";

pub fn credentials_secret_name(store: &str) -> String {
    format!("{store}-credentials")
}
/// The agents' role and password (basic-auth, as CloudNativePG's managed roles read it).
pub fn agent_secret_name(store: &str) -> String {
    format!("{store}-agent")
}
pub fn app_secret_name(store: &str) -> String {
    format!("{store}-app")
}
/// The PVC the StatefulSet controller makes from the claim template `data` for pod `<store>-0`.
pub fn data_pvc_name(store: &str) -> String {
    format!("data-{store}-0")
}
pub fn headless_service_name(store: &str) -> String {
    format!("{store}-hl")
}
pub fn cnpg_cluster_name(store: &str) -> String {
    format!("{store}-pg")
}
/// The Secret CloudNativePG creates for the app user of the cluster.
pub fn cnpg_app_secret_name(store: &str) -> String {
    format!("{}-app", cnpg_cluster_name(store))
}
/// In-cluster host of a managed store's client Service.
pub fn managed_host(store: &str, ns: &str) -> String {
    format!("{store}.{ns}.svc")
}

/// Labels every child carries.
pub fn child_labels(store: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.into(), MANAGED_BY.into()),
        (LABEL_STORE.into(), store.into()),
    ])
}

/// Selector of the PostgreSQL pod.
pub fn db_selector(store: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_STORE.into(), store.into()),
        (LABEL_COMPONENT.into(), COMPONENT_DB.into()),
    ])
}

fn owner(store: &MemoryStore) -> OwnerReference {
    store
        .controller_owner_ref(&())
        .expect("a MemoryStore from the API server has a name and uid")
}

fn meta(store: &MemoryStore, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: store.namespace(),
        labels: Some(child_labels(&store.name_any())),
        owner_references: Some(vec![owner(store)]),
        ..Default::default()
    }
}

/// The managed credentials: generated once (create-if-absent), never overwritten. Owned by the
/// store only under `deletionPolicy: Delete`: under Retain the data directory outlives the store,
/// and so must the password it was initialised with.
pub fn credentials_secret(store: &MemoryStore, password: String) -> Secret {
    let mut metadata = meta(store, credentials_secret_name(&store.name_any()));
    if store.spec.deletion_policy == DeletionPolicy::Retain {
        metadata.owner_references = None;
    }
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([
            ("username".into(), PG_USER.into()),
            ("password".into(), password),
            ("database".into(), PG_DATABASE.into()),
        ])),
        ..Default::default()
    }
}

/// The agents' login: generated once (create-if-absent), kept like the credentials (owned only
/// under `deletionPolicy: Delete`). `<store>-app` carries the same login as a connection.
pub fn agent_secret(store: &MemoryStore, role: &str, password: String) -> Secret {
    let mut metadata = meta(store, agent_secret_name(&store.name_any()));
    if store.spec.deletion_policy == DeletionPolicy::Retain {
        metadata.owner_references = None;
    }
    Secret {
        metadata,
        type_: Some("kubernetes.io/basic-auth".into()),
        string_data: Some(BTreeMap::from([
            ("username".into(), role.into()),
            ("password".into(), password),
        ])),
        ..Default::default()
    }
}

/// The connection Secret `<store>-app` handed to agents.
pub fn app_secret(store: &MemoryStore, data: BTreeMap<String, String>) -> Secret {
    Secret {
        metadata: meta(store, app_secret_name(&store.name_any())),
        type_: Some("Opaque".into()),
        data: Some(
            data.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// A strong random password: 32 characters from 62 symbols (~190 bits).
pub fn generate_password() -> String {
    use rand::{Rng, distr::Alphanumeric};
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// An env var from a Secret key that must exist.
pub fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Finds the server binaries in the Debian layout that both the public pgvector images and
/// Debian's own packages use, so no image's entrypoint or PATH is relied on.
const PG_BIN: &str = "bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)";

/// The explicit init step: a fresh volume gets a data directory, the superuser from the
/// credentials Secret (password login over TCP, trust only on the pod-local socket), and the
/// database. An existing data directory keeps its data, and its superuser's password is made
/// the Secret's again, so a rotated or recreated credentials Secret heals instead of locking the
/// operator and the agents out.
const INIT_SCRIPT: &str = r#"set -eu
if [ -s "$PGDATA/PG_VERSION" ]; then
  quoted=$(printf '%s' "$POSTGRES_PASSWORD" | sed "s/'/''/g")
  echo "ALTER ROLE \"$POSTGRES_USER\" PASSWORD '$quoted'" | "$bin/postgres" --single -D "$PGDATA" postgres >/dev/null
  echo "data directory $PGDATA exists (PostgreSQL $(cat "$PGDATA/PG_VERSION")); password of $POSTGRES_USER set from the credentials Secret"
  exit 0
fi
mkdir -p "$PGDATA"
chmod 700 "$PGDATA"
pwfile=$(mktemp)
printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
"$bin/initdb" -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 --locale=C \
  --auth-local=trust --auth-host=scram-sha-256
rm -f "$pwfile"
printf "listen_addresses = '*'\nunix_socket_directories = '/var/run/postgresql'\n" >> "$PGDATA/postgresql.conf"
printf 'host all all 0.0.0.0/0 scram-sha-256\nhost all all ::/0 scram-sha-256\n' >> "$PGDATA/pg_hba.conf"
echo "CREATE DATABASE \"$POSTGRES_DB\"" | "$bin/postgres" --single -D "$PGDATA" postgres >/dev/null
echo "initialised $PGDATA with database $POSTGRES_DB"
"#;

/// PID 1 of the server container. The kubelet stops containers with SIGTERM, which PostgreSQL
/// takes as a "smart" shutdown that waits for every client; turn it into a fast one (SIGINT).
const RUN_SCRIPT: &str = r#""$bin/postgres" -D "$PGDATA" &
pid=$!
trap 'kill -INT "$pid"' TERM INT
wait "$pid" || true
trap - TERM INT
wait "$pid""#;

fn shell(script: &str) -> Option<Vec<String>> {
    Some(vec![
        "sh".into(),
        "-c".into(),
        format!("{PG_BIN}\n{script}"),
    ])
}

fn pg_isready_probe(initial: i32, period: i32) -> Probe {
    Probe {
        exec: Some(ExecAction {
            command: shell(&format!(
                "exec \"$bin/pg_isready\" -h 127.0.0.1 -p {PG_PORT} -U \"$POSTGRES_USER\" -d \"$POSTGRES_DB\""
            )),
        }),
        initial_delay_seconds: Some(initial),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(6),
        ..Default::default()
    }
}

/// Pod-template annotation with a hash of the credentials: a changed password restarts the pod,
/// whose init step then sets it in the database.
pub const CREDENTIALS_HASH_ANNOTATION: &str = "aienv.orchestr8.io/credentials-hash";

/// sha256 over the credentials Secret's data (keys and values), hex.
pub fn credentials_hash(secret: &Secret) -> String {
    crate::controller::digest::secret_data("", secret)
}

/// The single-instance PostgreSQL StatefulSet of managed mode.
pub fn statefulset(
    store: &MemoryStore,
    managed: &ManagedSpec,
    credentials_hash: &str,
) -> StatefulSet {
    let name = store.name_any();
    let creds = credentials_secret_name(&name);
    let mut pod_labels = child_labels(&name);
    pod_labels.extend(db_selector(&name));
    let image = if managed.image.trim().is_empty() {
        default_pg_image()
    } else {
        managed.image.clone()
    };
    let container = Container {
        name: "postgres".into(),
        image: Some(image),
        command: shell(RUN_SCRIPT),
        ports: Some(vec![ContainerPort {
            name: Some("postgres".into()),
            container_port: PG_PORT.into(),
            ..Default::default()
        }]),
        env: Some(vec![
            secret_env("POSTGRES_USER", &creds, "username"),
            secret_env("POSTGRES_PASSWORD", &creds, "password"),
            secret_env("POSTGRES_DB", &creds, "database"),
            EnvVar {
                name: "PGDATA".into(),
                value: Some(format!("{DATA_MOUNT}/data/pgdata")),
                ..Default::default()
            },
        ]),
        resources: managed.resources.clone(),
        readiness_probe: Some(pg_isready_probe(2, 5)),
        liveness_probe: Some(pg_isready_probe(30, 20)),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(PG_UID),
            run_as_group: Some(PG_UID),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: None,
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".into(),
                localhost_profile: None,
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "data".into(),
                mount_path: DATA_MOUNT.into(),
                ..Default::default()
            },
            VolumeMount {
                name: "run".into(),
                mount_path: "/var/run/postgresql".into(),
                ..Default::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let init = Container {
        name: "init-data".into(),
        command: shell(INIT_SCRIPT),
        ports: None,
        readiness_probe: None,
        liveness_probe: None,
        ..container.clone()
    };
    let empty_dir = |n: &str| Volume {
        name: n.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    };
    let pvc = PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            labels: Some(child_labels(&name)),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: managed.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".into(),
                    Quantity(managed.storage.size.clone()),
                )])),
                limits: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let when_deleted = match store.spec.deletion_policy {
        DeletionPolicy::Delete => "Delete",
        DeletionPolicy::Retain => "Retain",
    };
    StatefulSet {
        metadata: meta(store, name.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(headless_service_name(&name)),
            selector: LabelSelector {
                match_labels: Some(db_selector(&name)),
                match_expressions: None,
            },
            persistent_volume_claim_retention_policy: Some(
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(when_deleted.into()),
                    when_scaled: Some("Retain".into()),
                },
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(BTreeMap::from([(
                        CREDENTIALS_HASH_ANNOTATION.into(),
                        credentials_hash.into(),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(PG_UID),
                        run_as_group: Some(PG_UID),
                        fs_group: Some(PG_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            localhost_profile: None,
                        }),
                        ..Default::default()
                    }),
                    init_containers: Some(vec![init]),
                    containers: vec![container],
                    volumes: Some(vec![empty_dir("run"), empty_dir("tmp")]),
                    termination_grace_period_seconds: Some(60),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![pvc]),
            ..Default::default()
        }),
        status: None,
    }
}

fn pg_service_port() -> ServicePort {
    ServicePort {
        name: Some("postgres".into()),
        port: PG_PORT.into(),
        target_port: Some(IntOrString::String("postgres".into())),
        protocol: Some("TCP".into()),
        ..Default::default()
    }
}

/// Headless Service giving the StatefulSet pod its stable DNS name.
pub fn headless_service(store: &MemoryStore) -> Service {
    let name = store.name_any();
    Service {
        metadata: meta(store, headless_service_name(&name)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(db_selector(&name)),
            ports: Some(vec![pg_service_port()]),
            ..Default::default()
        }),
        status: None,
    }
}

/// Client Service `<store>`: what the connection Secret's host points at.
pub fn client_service(store: &MemoryStore) -> Service {
    let name = store.name_any();
    Service {
        metadata: meta(store, name.clone()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(db_selector(&name)),
            ports: Some(vec![pg_service_port()]),
            ..Default::default()
        }),
        status: None,
    }
}

/// Admit only the operator and pods labelled as clients of this store to PostgreSQL's port.
pub fn network_policy(store: &MemoryStore) -> NetworkPolicy {
    let name = store.name_any();
    let clients = NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(LABEL_CLIENT.into(), name.clone())])),
            match_expressions: None,
        }),
        ..Default::default()
    };
    let operator = NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector::default()),
        pod_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                OPERATOR_LABEL.0.into(),
                OPERATOR_LABEL.1.into(),
            )])),
            match_expressions: None,
        }),
        ..Default::default()
    };
    NetworkPolicy {
        metadata: meta(store, format!("{name}-db")),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(db_selector(&name)),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![clients, operator]),
                ports: Some(vec![NetworkPolicyPort {
                    port: Some(IntOrString::Int(PG_PORT.into())),
                    protocol: Some("TCP".into()),
                    end_port: None,
                }]),
            }]),
            egress: None,
        }),
    }
}

/// The CloudNativePG Cluster resource.
pub fn cnpg_api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Cluster"),
        "clusters",
    )
}

/// A CloudNativePG Cluster: instances, storage, image with pgvector; the app database `memory`
/// owned by `aienv`, with the vector extension created by the superuser at bootstrap. No
/// `inheritedMetadata` with our labels: CloudNativePG copies it onto its own Services and pods,
/// which must never look like children of the store (its pods carry `cnpg.io/cluster`).
/// The Cluster, with the agents' role as a CloudNativePG managed role (password from
/// `<store>-agent`): the app user owns the database but may not create roles.
pub fn cnpg_cluster(
    store: &MemoryStore,
    spec: &CloudNativePgSpec,
    agent_role: &str,
) -> DynamicObject {
    let name = cnpg_cluster_name(&store.name_any());
    let mut storage = serde_json::json!({"size": spec.storage.size});
    if let Some(class) = &spec.storage.storage_class_name {
        storage["storageClass"] = class.clone().into();
    }
    let image = spec
        .image_name
        .clone()
        .filter(|i| !i.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_CNPG_IMAGE.to_string());
    let mut obj = DynamicObject::new(&name, &cnpg_api_resource()).data(serde_json::json!({
        "spec": {
            "instances": spec.instances,
            "imageName": image,
            "storage": storage,
            "bootstrap": {"initdb": {
                "database": PG_DATABASE,
                "owner": PG_USER,
                "postInitApplicationSQL": ["CREATE EXTENSION IF NOT EXISTS vector"],
            }},
            "managed": {"roles": [{
                "name": agent_role,
                "ensure": "present",
                "login": true,
                "superuser": false,
                "createdb": false,
                "createrole": false,
                "inherit": false,
                "replication": false,
                "bypassrls": false,
                "passwordSecret": {"name": agent_secret_name(&store.name_any())},
            }]},
        }
    }));
    obj.metadata = meta(store, name);
    obj
}

/// Whether the database (CloudNativePG's Cluster) goes with the store. With Retain it must
/// outlive the MemoryStore: an ownerReference would let the garbage collector delete the Cluster
/// (and CloudNativePG its volumes) with the store. Server-side apply drops or adds the reference
/// when the policy changes.
pub fn data_lifetime(store: &MemoryStore) -> Lifetime {
    match store.spec.deletion_policy {
        DeletionPolicy::Retain => Lifetime::Outlives,
        DeletionPolicy::Delete => Lifetime::Owned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(yaml: &str) -> MemoryStore {
        let mut s: MemoryStore = serde_saphyr::from_str(yaml).unwrap();
        s.metadata.uid = Some("uid-1".into());
        s
    }

    const MANAGED: &str = r#"
apiVersion: aienv.orchestr8.io/v1alpha1
kind: MemoryStore
metadata: {name: mem, namespace: team}
spec:
  mode: managed
  managed:
    image: pgvector/pgvector:0.8.1-pg18
    storage: {size: 5Gi, storageClassName: fast}
  deletionPolicy: Delete
"#;

    #[test]
    fn statefulset_is_restricted_and_pinned() {
        let s = store(MANAGED);
        let sts = statefulset(&s, s.spec.managed.as_ref().unwrap(), "h");
        let spec = sts.spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.service_name.as_deref(), Some("mem-hl"));
        let pod = spec.template.spec.unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("pgvector/pgvector:0.8.1-pg18"));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.run_as_user, Some(999));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().drop.as_deref(),
            Some(&["ALL".to_string()][..])
        );
        let mounts: Vec<&str> = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert!(mounts.contains(&"/var/run/postgresql") && mounts.contains(&"/tmp"));
        assert!(c.readiness_probe.is_some() && c.liveness_probe.is_some());
        let pvc = &spec.volume_claim_templates.unwrap()[0];
        let pvc_spec = pvc.spec.as_ref().unwrap();
        assert_eq!(pvc_spec.storage_class_name.as_deref(), Some("fast"));
        assert_eq!(
            pvc_spec
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["storage"],
            Quantity("5Gi".into())
        );
        assert_eq!(
            spec.persistent_volume_claim_retention_policy
                .unwrap()
                .when_deleted
                .as_deref(),
            Some("Delete")
        );
        // Passwords come from the Secret, never inline.
        assert!(
            c.env
                .as_ref()
                .unwrap()
                .iter()
                .all(|e| e.name == "PGDATA" || e.value.is_none())
        );
        assert_eq!(
            sts.metadata.owner_references.unwrap()[0].kind,
            "MemoryStore"
        );
    }

    #[test]
    fn services_and_network_policy_select_the_db_pod() {
        let s = store(MANAGED);
        let hl = headless_service(&s);
        assert_eq!(
            hl.spec.as_ref().unwrap().cluster_ip.as_deref(),
            Some("None")
        );
        let client = client_service(&s);
        assert_eq!(client.metadata.name.as_deref(), Some("mem"));
        assert_eq!(client.spec.unwrap().selector, Some(db_selector("mem")));
        let np = network_policy(&s).spec.unwrap();
        let from = np.ingress.unwrap()[0].from.clone().unwrap();
        assert_eq!(
            from[0]
                .pod_selector
                .as_ref()
                .unwrap()
                .match_labels
                .as_ref()
                .unwrap()[LABEL_CLIENT],
            "mem"
        );
        assert!(from[1].namespace_selector.is_some());
        assert_eq!(np.policy_types.unwrap(), ["Ingress"]);
    }

    #[test]
    fn passwords_are_strong_and_fresh() {
        let a = generate_password();
        assert_eq!(a.len(), 32);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, generate_password());
    }

    #[test]
    fn cnpg_cluster_is_owned_only_when_its_data_may_be_deleted() {
        let retain = store(
            "apiVersion: aienv.orchestr8.io/v1alpha1\nkind: MemoryStore\nmetadata: {name: m, namespace: t}\nspec: {mode: cloudnativepg, cloudnativepg: {instances: 3}}\n",
        );
        assert_eq!(
            data_lifetime(&retain),
            Lifetime::Outlives,
            "Retain: the GC must not delete the database"
        );
        let mut delete = retain.clone();
        delete.spec.deletion_policy = DeletionPolicy::Delete;
        assert_eq!(data_lifetime(&delete), Lifetime::Owned);
    }

    #[test]
    fn cnpg_cluster_carries_instances_storage_and_image() {
        let s = store(
            r#"
apiVersion: aienv.orchestr8.io/v1alpha1
kind: MemoryStore
metadata: {name: mem, namespace: team}
spec:
  mode: cloudnativepg
  cloudnativepg: {instances: 3, storage: {size: 20Gi}}
"#,
        );
        let c = cnpg_cluster(
            &s,
            s.spec.cloudnativepg.as_ref().unwrap(),
            "aienv_mem_agent_x",
        );
        assert_eq!(c.metadata.name.as_deref(), Some("mem-pg"));
        assert_eq!(c.data["spec"]["instances"], 3);
        assert_eq!(c.data["spec"]["storage"]["size"], "20Gi");
        assert_eq!(c.data["spec"]["imageName"], DEFAULT_CNPG_IMAGE);
        assert_eq!(cnpg_app_secret_name("mem"), "mem-pg-app");
        // The agents' role is CloudNativePG's to create, with the password of `<store>-agent`.
        let role = &c.data["spec"]["managed"]["roles"][0];
        assert_eq!(role["name"], "aienv_mem_agent_x");
        assert_eq!(role["login"], true);
        assert_eq!(role["superuser"], false);
        assert_eq!(role["passwordSecret"]["name"], "mem-agent");
    }
}
