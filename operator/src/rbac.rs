//! The RBAC rules the operator needs, derived from the API calls the code makes (`aienv rbac`).
//! `charts/aienv-operator/files/rbac/` holds the committed copy; a test fails when it drifts.
//!
//! Each entry names who calls it. How the calls map to verbs:
//! - a `Controller` or a reflector watches its kinds: `list`, `watch` (a metadata-only watch
//!   needs the same verbs);
//! - a [`ChildSet`](crate::controller::children::ChildSet) lists the kind by the owner's label,
//!   gets a child the list lacks, applies it with server-side apply (`patch`, and `create` the
//!   first time: the API server authorizes an apply that creates as `create`) and deletes the
//!   children no longer wanted;
//! - a child carries a controller ownerReference with `blockOwnerDeletion`, which an API server
//!   with the `OwnerReferencesPermissionEnforcement` admission plugin only accepts from who may
//!   `update` the owner's `finalizers`;
//! - statuses are written with server-side apply on `/status` (`patch`), finalizers with a
//!   merge patch of the object (`patch`).
//!
//! Nothing here is `*`, and no kind is granted a verb no code path uses.

use k8s_openapi::api::rbac::v1::PolicyRule;

/// aienv's own API group.
const AIENV: &str = "aienv.orchestr8.io";

/// One rule: what the operator may do to one resource (or subresource) and which code does it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// API group (`""` is the core group).
    pub group: &'static str,
    /// Plural resource name, with `/subresource` where one is meant.
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    /// Only these objects (empty: any).
    pub resource_names: &'static [&'static str],
    /// The code that makes these calls.
    pub why: &'static str,
}

/// Rules on namespaced resources: granted cluster-wide by a ClusterRole, or by a Role in the one
/// namespace `--watch-namespace` names.
pub const NAMESPACED: &[Rule] = &[
    // aienv's kinds.
    Rule {
        group: AIENV,
        resource: "llmprofiles",
        verbs: &["list", "watch"],
        resource_names: &[],
        why: "LlmProfile controller (controllers/llm_profile); AiEnvironment's profile reflector (controllers/ai_environment)",
    },
    Rule {
        group: AIENV,
        resource: "llmprofiles/status",
        verbs: &["patch"],
        resource_names: &[],
        why: "status writer of the LlmProfile controller (controller/status.rs, server-side apply)",
    },
    Rule {
        group: AIENV,
        resource: "aienvironments",
        verbs: &["list", "watch"],
        resource_names: &[],
        why: "AiEnvironment controller (controllers/ai_environment)",
    },
    Rule {
        group: AIENV,
        resource: "aienvironments/status",
        verbs: &["patch"],
        resource_names: &[],
        why: "status writer of the AiEnvironment controller (controller/status.rs)",
    },
    Rule {
        group: AIENV,
        resource: "aienvironments/finalizers",
        verbs: &["update"],
        resource_names: &[],
        why: "the <env>-llm Secret and the NetworkPolicies carry blockOwnerDeletion (ChildSet)",
    },
    Rule {
        group: AIENV,
        resource: "memorystores",
        verbs: &["get", "list", "watch", "patch"],
        resource_names: &[],
        why: "MemoryStore controller (list, watch; finalizer merge patch, controller/finalizer.rs; get in memory_store/deletion.rs); AiEnvironment metadata watch and get (ai_environment/memory.rs); BackupSchedule watch and get (backup_schedule/resolve.rs)",
    },
    Rule {
        group: AIENV,
        resource: "memorystores/status",
        verbs: &["patch"],
        resource_names: &[],
        why: "status writer of the MemoryStore controller (controller/status.rs)",
    },
    Rule {
        group: AIENV,
        resource: "memorystores/finalizers",
        verbs: &["update"],
        resource_names: &[],
        why: "the store's Services, StatefulSet, NetworkPolicy, Secrets and CloudNativePG Cluster carry blockOwnerDeletion (ChildSet)",
    },
    Rule {
        group: AIENV,
        resource: "backupschedules",
        verbs: &["list", "watch"],
        resource_names: &[],
        why: "BackupSchedule controller (controllers/backup_schedule)",
    },
    Rule {
        group: AIENV,
        resource: "backupschedules/status",
        verbs: &["patch"],
        resource_names: &[],
        why: "status writer of the BackupSchedule controller (controller/status.rs)",
    },
    Rule {
        group: AIENV,
        resource: "backupschedules/finalizers",
        verbs: &["update"],
        resource_names: &[],
        why: "the CronJobs and Jobs carry blockOwnerDeletion (ChildSet)",
    },
    // Core.
    Rule {
        group: "",
        resource: "secrets",
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        resource_names: &[],
        why: "shared metadata watch of Secrets (controller/shared.rs); API keys, CA bundles, connection and credential Secrets read by every controller (get); <env>-llm and <store>-app children (ChildSet: list, get, create, patch, delete); generated credentials (apply::create_if_absent: get, create; ownerReference merge patch in memory_store/mod.rs)",
    },
    Rule {
        group: "",
        resource: "services",
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        resource_names: &[],
        why: "MemoryStore controller: owns its Services (watch) and applies them (ChildSet)",
    },
    Rule {
        group: "",
        resource: "persistentvolumeclaims",
        verbs: &["list", "delete"],
        resource_names: &[],
        why: "MemoryStore deletionPolicy Delete removes the managed store's data volume (memory_store/deletion.rs)",
    },
    Rule {
        group: "",
        resource: "pods",
        verbs: &["list"],
        resource_names: &[],
        why: "BackupSchedule reads a finished Job's pod for its termination message (backup_schedule/resolve.rs)",
    },
    // Workloads.
    Rule {
        group: "apps",
        resource: "deployments",
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        resource_names: &[],
        why: "AiEnvironment: shared watch of agent workloads (controller/shared.rs); the config-hash rollout reads then applies with a resourceVersion precondition, so it never creates (ai_environment/workloads.rs); MemoryStore's embedding workers (owns: watch; ChildSet creates, patches and deletes them, memory_store/workers.rs)",
    },
    Rule {
        group: "apps",
        resource: "statefulsets",
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        resource_names: &[],
        why: "AiEnvironment rollout of agent StatefulSets (get, patch; shared watch); MemoryStore's managed PostgreSQL (owns: watch; ChildSet)",
    },
    Rule {
        group: "batch",
        resource: "cronjobs",
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        resource_names: &[],
        why: "BackupSchedule: owns its backup and verify CronJobs (watch; ChildSet)",
    },
    Rule {
        group: "batch",
        resource: "jobs",
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        resource_names: &[],
        why: "BackupSchedule: watches the CronJobs' Jobs by label, reads their results, creates on-demand and verify Jobs and removes them (ChildSet)",
    },
    Rule {
        group: "networking.k8s.io",
        resource: "networkpolicies",
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        resource_names: &[],
        why: "AiEnvironment and MemoryStore: own their NetworkPolicies (watch; ChildSet)",
    },
    Rule {
        group: "postgresql.cnpg.io",
        resource: "clusters",
        verbs: &["get", "list", "create", "patch", "delete"],
        resource_names: &[],
        why: "MemoryStore mode cloudnativepg: the CloudNativePG Cluster (ChildSet::add_dynamic; not watched)",
    },
    Rule {
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        resource_names: &[],
        why: "Event recorder: a new Event, then its series count (controller/events.rs)",
    },
];

/// Rules on cluster-scoped resources: always a ClusterRole.
pub const CLUSTER_SCOPED: &[Rule] = &[Rule {
    group: "apiextensions.k8s.io",
    resource: "customresourcedefinitions",
    verbs: &["get"],
    resource_names: &[
        "aienvironments.aienv.orchestr8.io",
        "backupschedules.aienv.orchestr8.io",
        "llmprofiles.aienv.orchestr8.io",
        "memorystores.aienv.orchestr8.io",
    ],
    why: "the operator waits until its CRDs are established before starting (runtime/crds.rs)",
}];

/// Leader election (kube-lease-manager): a Role in the Lease's namespace. It reads the Lease,
/// creates it when missing (`create` cannot be limited to a name: the name is not known to RBAC
/// before the object exists) and takes, renews and releases it with patches.
pub const LEASE: &[Rule] = &[
    Rule {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "patch"],
        resource_names: &[crate::runtime::DEFAULT_LEASE_NAME],
        why: "leader election: read, take, renew and release the Lease (runtime/leader.rs, kube-lease-manager)",
    },
    Rule {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["create"],
        resource_names: &[],
        why: "leader election: create the Lease the first time (kube-lease-manager)",
    },
];

impl Rule {
    pub fn policy_rule(&self) -> PolicyRule {
        PolicyRule {
            api_groups: Some(vec![self.group.to_string()]),
            resources: Some(vec![self.resource.to_string()]),
            verbs: self.verbs.iter().map(|v| v.to_string()).collect(),
            resource_names: (!self.resource_names.is_empty())
                .then(|| self.resource_names.iter().map(|n| n.to_string()).collect()),
            non_resource_urls: None,
        }
    }
}

fn policy_rules(rules: &[Rule]) -> Vec<PolicyRule> {
    rules.iter().map(Rule::policy_rule).collect()
}

/// What the ClusterRole grants when the operator watches every namespace.
pub fn cluster_rules() -> Vec<PolicyRule> {
    policy_rules(&[NAMESPACED, CLUSTER_SCOPED].concat())
}

/// What a Role in the watched namespace grants under `--watch-namespace`.
pub fn namespaced_rules() -> Vec<PolicyRule> {
    policy_rules(NAMESPACED)
}

/// What the ClusterRole grants under `--watch-namespace`: cluster-scoped resources only.
pub fn cluster_scoped_rules() -> Vec<PolicyRule> {
    policy_rules(CLUSTER_SCOPED)
}

/// The leader-election Role, in the Lease's namespace.
pub fn lease_rules() -> Vec<PolicyRule> {
    policy_rules(LEASE)
}

/// The rule files the chart reads (`charts/aienv-operator/files/rbac/`): name and rules.
pub fn files() -> [(&'static str, &'static [Rule]); 3] {
    [
        ("namespaced-rules.yaml", NAMESPACED),
        ("cluster-scoped-rules.yaml", CLUSTER_SCOPED),
        ("lease-rules.yaml", LEASE),
    ]
}

/// Rules as a YAML list, each preceded by a comment saying which code needs it.
pub fn to_yaml(rules: &[Rule]) -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for rule in rules {
        out.push_str(&format!("# {}\n", rule.why));
        out.push_str(&serde_saphyr::to_string(&[rule.policy_rule()])?);
    }
    Ok(out)
}

/// Every rule file as one YAML stream, titled (what `aienv rbac` prints).
pub fn all_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for (name, rules) in files() {
        out.push_str(&format!("# {name}\n"));
        out.push_str(&to_yaml(rules)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn all() -> impl Iterator<Item = &'static Rule> {
        NAMESPACED.iter().chain(CLUSTER_SCOPED).chain(LEASE)
    }

    #[test]
    fn no_wildcards_and_only_known_verbs() {
        let known = [
            "get", "list", "watch", "create", "update", "patch", "delete",
        ];
        for r in all() {
            assert!(!r.group.contains('*') && !r.resource.contains('*'), "{r:?}");
            assert!(!r.verbs.is_empty(), "{r:?}");
            for v in r.verbs {
                assert!(known.contains(v), "{v} in {r:?}");
            }
            assert!(!r.why.trim().is_empty(), "{r:?} says not why");
        }
    }

    #[test]
    fn each_resource_appears_once_per_role() {
        for rules in [NAMESPACED, CLUSTER_SCOPED] {
            let mut seen = BTreeSet::new();
            for r in rules {
                assert!(seen.insert((r.group, r.resource)), "{r:?} twice");
            }
        }
        // The lease Role splits leases by resourceNames, and a verb is in one of them only.
        let verbs: Vec<&str> = LEASE.iter().flat_map(|r| r.verbs.iter().copied()).collect();
        assert_eq!(verbs.len(), verbs.iter().collect::<BTreeSet<_>>().len());
    }

    #[test]
    fn every_crd_the_operator_waits_for_is_readable_and_no_other() {
        let names: BTreeSet<String> = crate::crdgen::all()
            .into_iter()
            .filter_map(|c| c.metadata.name)
            .collect();
        let granted: BTreeSet<String> = CLUSTER_SCOPED[0]
            .resource_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(granted, names);
    }

    #[test]
    fn every_kind_with_children_lets_them_block_its_deletion() {
        // ChildSet owners (with blockOwnerDeletion): environments, stores, schedules.
        for kind in ["aienvironments", "memorystores", "backupschedules"] {
            let f = format!("{kind}/finalizers");
            assert!(
                NAMESPACED
                    .iter()
                    .any(|r| r.resource == f && r.verbs == ["update"]),
                "{f}"
            );
        }
        // Each of the four kinds writes its status.
        for kind in [
            "llmprofiles",
            "aienvironments",
            "memorystores",
            "backupschedules",
        ] {
            let s = format!("{kind}/status");
            assert!(NAMESPACED.iter().any(|r| r.resource == s), "{s}");
        }
    }

    #[test]
    fn the_yaml_parses_back_into_the_same_rules() {
        for (_, rules) in files() {
            let parsed: Vec<PolicyRule> = serde_saphyr::from_str(&to_yaml(rules).unwrap()).unwrap();
            assert_eq!(parsed, policy_rules(rules));
        }
        assert_eq!(
            cluster_rules().len(),
            namespaced_rules().len() + cluster_scoped_rules().len()
        );
    }

    /// The chart's `files/rbac/` is what `aienv rbac --write` makes of this table today.
    #[test]
    fn the_charts_rule_files_are_generated_from_this_table() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../charts/aienv-operator/files/rbac");
        let mut committed: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        committed.sort();
        let mut expected: Vec<String> = files().iter().map(|(n, _)| n.to_string()).collect();
        expected.sort();
        assert_eq!(committed, expected, "files in {}", dir.display());
        for (name, rules) in files() {
            let on_disk = std::fs::read_to_string(dir.join(name)).unwrap();
            assert!(
                on_disk == to_yaml(rules).unwrap(),
                "{name} differs from the code's rules: run `aienv rbac --write charts/aienv-operator/files/rbac`"
            );
        }
    }

    /// The calls the code makes, listed by call site independently of the table: each is
    /// granted (a rule that disappears fails here), and the table grants nothing else.
    #[test]
    fn every_call_the_code_makes_is_granted_and_nothing_else() {
        const A: &str = AIENV;
        // A watched kind the code also applies as children (ChildSet) and reads by name.
        const OWNED: &[&str] = &["get", "list", "watch", "create", "patch", "delete"];
        let calls: &[(&str, &str, &[&str])] = &[
            // Controllers and reflectors (controllers/*/mod.rs) list and watch their kinds.
            (A, "llmprofiles", &["list", "watch"]),
            (A, "aienvironments", &["list", "watch"]),
            (A, "backupschedules", &["list", "watch"]),
            // MemoryStore: watched; get in deletion.rs and memory.rs; finalizer merge patch.
            (A, "memorystores", &["get", "list", "watch", "patch"]),
            // controller/status.rs: server-side apply of /status.
            (A, "llmprofiles/status", &["patch"]),
            (A, "aienvironments/status", &["patch"]),
            (A, "memorystores/status", &["patch"]),
            (A, "backupschedules/status", &["patch"]),
            // ChildSet children carry blockOwnerDeletion.
            (A, "aienvironments/finalizers", &["update"]),
            (A, "memorystores/finalizers", &["update"]),
            (A, "backupschedules/finalizers", &["update"]),
            // controller/shared.rs watch; resolve get_opt; ChildSet; apply::create_if_absent.
            ("", "secrets", OWNED),
            // MemoryStore .owns(Service) and ChildSet.
            ("", "services", OWNED),
            // memory_store/deletion.rs delete_data_volumes.
            ("", "persistentvolumeclaims", &["list", "delete"]),
            // backup_schedule/resolve.rs newest_pod.
            ("", "pods", &["list"]),
            // shared.rs watch; workloads.rs get_opt then apply with a precondition; MemoryStore
            // .owns(Deployment) and ChildSet (embedding workers).
            ("apps", "deployments", OWNED),
            ("apps", "statefulsets", OWNED),
            // BackupSchedule .owns(CronJob), .watches(Job); ChildSet.
            ("batch", "cronjobs", OWNED),
            ("batch", "jobs", OWNED),
            ("networking.k8s.io", "networkpolicies", OWNED),
            // ChildSet::add_dynamic (not watched).
            (
                "postgresql.cnpg.io",
                "clusters",
                &["get", "list", "create", "patch", "delete"],
            ),
            // controller/events.rs: create, then patch the series.
            ("events.k8s.io", "events", &["create", "patch"]),
            // runtime/crds.rs.
            (
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                &["get"],
            ),
            // runtime/leader.rs.
            ("coordination.k8s.io", "leases", &["get", "create", "patch"]),
        ];
        let needed: BTreeSet<(&str, &str, &str)> = calls
            .iter()
            .flat_map(|(g, r, vs)| vs.iter().map(move |v| (*g, *r, *v)))
            .collect();
        let granted: BTreeSet<(&str, &str, &str)> = all()
            .flat_map(|r| r.verbs.iter().map(move |v| (r.group, r.resource, *v)))
            .collect();
        assert_eq!(
            needed.difference(&granted).collect::<Vec<_>>(),
            Vec::<&(&str, &str, &str)>::new(),
            "needed but not granted"
        );
        assert_eq!(
            granted.difference(&needed).collect::<Vec<_>>(),
            Vec::<&(&str, &str, &str)>::new(),
            "granted but not used"
        );
    }
}
