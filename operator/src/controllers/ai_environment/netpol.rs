//! The agents' NetworkPolicies: default-deny, DNS, the memory database, the LLM endpoint. Pure.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::networking::v1::{
        IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPeer, NetworkPolicyPort,
        NetworkPolicySpec,
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};

use crate::api::ai_environment::NetworkPolicySpec as Settings;

/// Label on every child of an environment: its name.
pub const ENV_LABEL: &str = "aienv.orchestr8.io/environment";
/// Default PostgreSQL port when the MemoryStore does not report one.
pub const DEFAULT_DB_PORT: u16 = 5432;

/// The policies and what status should say about LLM egress.
#[derive(Clone, Debug, PartialEq)]
pub struct Built {
    pub policies: Vec<NetworkPolicy>,
    /// Human-readable summary for the NetworkPolicyReady condition.
    pub summary: String,
}

/// Build the policies of environment `env`. `db_port` is Some when memory.storeRef is set.
pub fn build(
    env: &str,
    owner: &OwnerReference,
    selector: &LabelSelector,
    settings: &Settings,
    db_port: Option<u16>,
) -> Built {
    let meta = |suffix: &str| ObjectMeta {
        name: Some(format!("{env}-{suffix}")),
        labels: Some(BTreeMap::from([
            (ENV_LABEL.to_string(), env.to_string()),
            (
                "app.kubernetes.io/managed-by".to_string(),
                "aienv".to_string(),
            ),
        ])),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    };
    let pods = LabelSelector {
        match_labels: selector.match_labels.clone(),
        match_expressions: selector.match_expressions.clone(),
    };
    let port = |proto: &str, p: u16| NetworkPolicyPort {
        protocol: Some(proto.to_string()),
        port: Some(IntOrString::Int(p.into())),
        end_port: None,
    };
    let policy = |suffix: &str, types: &[&str], egress: Option<Vec<NetworkPolicyEgressRule>>| {
        NetworkPolicy {
            metadata: meta(suffix),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(pods.clone()),
                policy_types: Some(types.iter().map(|s| s.to_string()).collect()),
                egress,
                ingress: None,
            }),
        }
    };

    let mut policies = vec![
        // No ingress or egress rules: everything not allowed below is denied.
        policy("default-deny", &["Ingress", "Egress"], None),
        policy(
            "allow-dns",
            &["Egress"],
            Some(vec![NetworkPolicyEgressRule {
                to: Some(vec![NetworkPolicyPeer {
                    namespace_selector: Some(LabelSelector {
                        match_labels: Some(BTreeMap::from([(
                            "kubernetes.io/metadata.name".to_string(),
                            "kube-system".to_string(),
                        )])),
                        match_expressions: None,
                    }),
                    pod_selector: Some(LabelSelector {
                        match_labels: Some(BTreeMap::from([(
                            "k8s-app".to_string(),
                            "kube-dns".to_string(),
                        )])),
                        match_expressions: None,
                    }),
                    ip_block: None,
                }]),
                ports: Some(vec![port("UDP", 53), port("TCP", 53)]),
            }]),
        ),
    ];
    if let Some(p) = db_port {
        policies.push(policy(
            "allow-memory",
            &["Egress"],
            Some(vec![NetworkPolicyEgressRule {
                to: None,
                ports: Some(vec![port("TCP", p)]),
            }]),
        ));
    }
    let (cidrs, anywhere) = if settings.llm_egress_cidrs.is_empty() {
        (vec!["0.0.0.0/0".to_string(), "::/0".to_string()], true)
    } else {
        (settings.llm_egress_cidrs.clone(), false)
    };
    policies.push(policy(
        "allow-llm",
        &["Egress"],
        Some(vec![NetworkPolicyEgressRule {
            to: Some(
                cidrs
                    .iter()
                    .map(|c| NetworkPolicyPeer {
                        ip_block: Some(IPBlock {
                            cidr: c.clone(),
                            except: None,
                        }),
                        namespace_selector: None,
                        pod_selector: None,
                    })
                    .collect(),
            ),
            ports: Some(vec![port("TCP", settings.llm_port)]),
        }]),
    ));
    let llm = if anywhere {
        format!(
            "LLM egress on TCP {} is allowed to ANY address (0.0.0.0/0, ::/0) because networkPolicy.llmEgressCidrs is empty: list the endpoint's CIDRs to restrict it",
            settings.llm_port
        )
    } else {
        format!(
            "LLM egress on TCP {} allowed to {}",
            settings.llm_port,
            settings.llm_egress_cidrs.join(", ")
        )
    };
    let memory = match db_port {
        Some(p) => format!("; memory database egress on TCP {p}"),
        None => String::new(),
    };
    Built {
        policies,
        summary: format!("default-deny ingress and egress; DNS to kube-dns{memory}; {llm}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> OwnerReference {
        OwnerReference {
            api_version: "aienv.orchestr8.io/v1alpha1".into(),
            kind: "AiEnvironment".into(),
            name: "dev".into(),
            uid: "u".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }
    fn sel() -> LabelSelector {
        LabelSelector {
            match_labels: Some(BTreeMap::from([("app".into(), "agent".into())])),
            match_expressions: None,
        }
    }

    #[test]
    fn default_settings_open_llm_egress_everywhere_and_say_so() {
        let b = build("dev", &owner(), &sel(), &Settings::default(), None);
        let names: Vec<_> = b
            .policies
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(
            names,
            ["dev-default-deny", "dev-allow-dns", "dev-allow-llm"]
        );
        assert!(b.summary.contains("ANY address"));
        let llm = serde_json::to_value(&b.policies[2]).unwrap();
        assert_eq!(llm["spec"]["egress"][0]["to"][1]["ipBlock"]["cidr"], "::/0");
        assert_eq!(llm["spec"]["egress"][0]["ports"][0]["port"], 443);
        let deny = serde_json::to_value(&b.policies[0]).unwrap();
        assert_eq!(
            deny["spec"]["policyTypes"],
            serde_json::json!(["Ingress", "Egress"])
        );
        assert_eq!(deny["spec"]["podSelector"]["matchLabels"]["app"], "agent");
        assert!(deny["spec"].get("egress").is_none());
    }

    #[test]
    fn cidrs_and_memory_port() {
        let s = Settings {
            enabled: true,
            llm_egress_cidrs: vec!["10.0.0.0/8".into()],
            llm_port: 8443,
        };
        let b = build("dev", &owner(), &sel(), &s, Some(6432));
        assert_eq!(b.policies.len(), 4);
        let mem = serde_json::to_value(&b.policies[2]).unwrap();
        assert_eq!(mem["spec"]["egress"][0]["ports"][0]["port"], 6432);
        assert!(b.summary.contains("10.0.0.0/8") && !b.summary.contains("ANY"));
        let dns = serde_json::to_value(&b.policies[1]).unwrap();
        assert_eq!(
            dns["spec"]["egress"][0]["to"][0]["podSelector"]["matchLabels"]["k8s-app"],
            "kube-dns"
        );
    }
}
