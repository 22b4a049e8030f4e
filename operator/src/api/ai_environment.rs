//! AiEnvironment: binds agent workloads to an LLM profile, a memory store and network policies.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Binds the agent Deployments/StatefulSets selected by `agents.selector` to an active LlmProfile
/// (with ordered fallbacks), renders the profile for each harness into the Secret `<name>-llm`, rolls
/// the agents once per real change, and fences them with NetworkPolicies.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "aienv.orchestr8.io",
    version = "v1alpha1",
    kind = "AiEnvironment",
    namespaced,
    shortname = "aienv",
    category = "ai",
    status = "AiEnvironmentStatus",
    doc = "AiEnvironment binds agent workloads to an LLM profile (with fallbacks), a memory store and network policies.",
    printcolumn(name = "Active", type_ = "string", json_path = ".status.activeProfile"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Hash",
        type_ = "string",
        json_path = ".status.renderedHash",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AiEnvironmentSpec {
    /// Which LLM profile the agents use, what to fall back to, and which harnesses to render for.
    pub llm: LlmBinding,
    /// Which workloads are the agents, and how they are rolled.
    pub agents: Agents,
    /// The MemoryStore whose connection Secret the agents get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryBinding>,
    /// NetworkPolicies generated for the agents.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
    /// Stop reconciling: nothing is rendered or rolled while true.
    #[serde(default)]
    pub suspend: bool,
}

/// The LLM side of an environment.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("!(self.profileRef in self.fallbacks)")
    .message("llm.fallbacks may not contain llm.profileRef: the active profile is always tried first")
    .field_path(".fallbacks"))]
#[x_kube(validation = Rule::new("self.fallbacks.all(f, self.fallbacks.exists_one(g, g == f))")
    .message("llm.fallbacks has a duplicate profile name: list each fallback once, in the order to try them")
    .field_path(".fallbacks"))]
#[serde(rename_all = "camelCase")]
pub struct LlmBinding {
    /// Name of the active LlmProfile in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub profile_ref: String,
    /// LlmProfile names to fail over to, in order, when the active profile's probe fails.
    #[serde(default)]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253)))]
    pub fallbacks: Vec<String>,
    /// Agent harnesses to render the profile for.
    #[serde(default = "default_harnesses")]
    #[schemars(length(min = 1, max = 4))]
    pub harnesses: Vec<Harness>,
    /// Seconds the primary profile must stay healthy before the environment switches back to it
    /// after a failover. Never flaps faster than this.
    #[serde(default = "default_switch_back_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub switch_back_after_seconds: u32,
}

fn default_harnesses() -> Vec<Harness> {
    vec![Harness::ClaudeCode]
}
fn default_switch_back_seconds() -> u32 {
    300
}

/// An agent CLI the profile is rendered for.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub enum Harness {
    ClaudeCode,
    Codex,
    QwenCode,
    Generic,
}

/// The agent workloads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Agents {
    /// Label selector over Deployments and StatefulSets in this namespace (must not be empty).
    /// The NetworkPolicies select the agents' pods with the same selector, so put these labels on
    /// the pod template too.
    pub selector: LabelSelector,
    /// How a change reaches the agents.
    #[serde(default)]
    pub rollout: Rollout,
}

/// How a rendered change is rolled out to the agents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rollout {
    /// rolling: every selected workload at once; canary: one workload first, the rest once it is
    /// updated and available.
    #[serde(default)]
    pub strategy: RolloutStrategy,
    /// Bursts of edits within this many seconds are coalesced into one rollout.
    #[serde(default = "default_min_interval")]
    #[schemars(range(min = 0, max = 3600))]
    pub min_interval_seconds: u32,
    /// How long the canary may take to become updated and available before the rollout stops.
    #[serde(default = "default_canary_timeout")]
    #[schemars(range(min = 10, max = 86400))]
    pub canary_timeout_seconds: u32,
}

impl Default for Rollout {
    fn default() -> Self {
        Self {
            strategy: RolloutStrategy::default(),
            min_interval_seconds: default_min_interval(),
            canary_timeout_seconds: default_canary_timeout(),
        }
    }
}

fn default_min_interval() -> u32 {
    10
}
fn default_canary_timeout() -> u32 {
    600
}

/// Rollout strategy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RolloutStrategy {
    #[default]
    Rolling,
    Canary,
}

/// The memory side of an environment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryBinding {
    /// Name of a MemoryStore in this namespace.
    #[schemars(length(min = 1, max = 253))]
    pub store_ref: String,
}

/// NetworkPolicies for the agents.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Generate default-deny, DNS, memory and LLM-egress policies for the agents.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// CIDRs the agents may reach the LLM at on `llmPort`. Empty means anywhere (stated in status).
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(min = 1, max = 64)))]
    pub llm_egress_cidrs: Vec<String>,
    /// Port of the LLM endpoint.
    #[serde(default = "default_llm_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub llm_port: u16,
    /// Where the agents may send DNS (port 53, UDP and TCP). Unset: any destination, which works
    /// with kube-dns, OpenShift's dns-default and NodeLocal DNSCache alike.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsPeer>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            llm_egress_cidrs: Vec::new(),
            llm_port: default_llm_port(),
            dns: None,
        }
    }
}

/// The DNS servers' pods (by namespace and pod labels, both optional) or addresses.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.namespaceLabels) || has(self.podLabels) || has(self.cidrs)")
    .message("networkPolicy.dns needs namespaceLabels, podLabels or cidrs (leave dns unset to allow DNS to any destination)"))]
#[serde(rename_all = "camelCase")]
pub struct DnsPeer {
    /// Labels of the DNS pods' namespace, e.g. {kubernetes.io/metadata.name: kube-system}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_labels: Option<BTreeMap<String, String>>,
    /// Labels of the DNS pods, e.g. {k8s-app: kube-dns}.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_labels: Option<BTreeMap<String, String>>,
    /// Addresses of the DNS servers (NodeLocal DNSCache's 169.254.20.10/32, a resolver outside).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 64)))]
    pub cidrs: Option<Vec<String>>,
}

fn default_true() -> bool {
    true
}
fn default_llm_port() -> u16 {
    443
}

/// Observed state of an AiEnvironment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AiEnvironmentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// ProfileResolved, SecretRendered, RolledOut, MemoryReady, FailedOver, NetworkPolicyReady, Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The profile currently rendered for the agents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_profile: Option<String>,
    /// sha256 of the rendered Secret, as written to the workloads' config-hash annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rendered_hash: Option<String>,
    /// The selected workloads and how far each has taken the rendered hash.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<RolloutTarget>,
    /// When the agents were last rolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rollout_time: Option<Time>,
}

/// One selected workload.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutTarget {
    /// Deployment or StatefulSet.
    pub kind: String,
    pub name: String,
    /// The config hash on the workload's pod template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_hash: Option<String>,
    #[serde(default)]
    pub updated_replicas: i32,
    #[serde(default)]
    pub ready_replicas: i32,
}
