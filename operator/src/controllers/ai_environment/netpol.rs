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

use crate::{
    api::ai_environment::{DnsPeer, NetworkPolicySpec as Settings},
    controller::labels::{DNS_PORT, LABEL_MANAGED_BY, MANAGED_BY},
};

/// Label on every child of an environment: its name.
pub const ENV_LABEL: &str = "aienv.orchestr8.io/environment";
/// Default PostgreSQL port when the MemoryStore does not report one.
pub const DEFAULT_DB_PORT: u16 = crate::controller::labels::POSTGRES_PORT;

/// Where the agents' memory database is, for its egress rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryPeer {
    pub port: u16,
    pub to: MemoryDestination,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemoryDestination {
    /// The store's database pods (labels), in the environment's namespace.
    Pods(BTreeMap<String, String>),
    /// The external database's address, as a CIDR.
    Cidr(String),
    /// The external database by host name, which a NetworkPolicy cannot name: any destination
    /// on the port (said in status).
    Anywhere { host: String },
}

/// The policies and what status should say about LLM egress.
#[derive(Clone, Debug, PartialEq)]
pub struct Built {
    pub policies: Vec<NetworkPolicy>,
    /// Human-readable summary for the NetworkPolicyReady condition.
    pub summary: String,
}

/// Build the policies of environment `env`. `memory` is Some when memory.storeRef names a store
/// whose database can be located.
pub fn build(
    env: &str,
    owner: &OwnerReference,
    selector: &LabelSelector,
    settings: &Settings,
    memory: Option<&MemoryPeer>,
) -> Built {
    let meta = |suffix: &str| ObjectMeta {
        name: Some(format!("{env}-{suffix}")),
        labels: Some(BTreeMap::from([
            (ENV_LABEL.to_string(), env.to_string()),
            (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
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
                to: settings.dns.as_ref().map(dns_peers),
                ports: Some(vec![port("UDP", DNS_PORT), port("TCP", DNS_PORT)]),
            }]),
        ),
    ];
    if let Some(m) = memory {
        let to = match &m.to {
            MemoryDestination::Pods(labels) => Some(vec![NetworkPolicyPeer {
                pod_selector: Some(LabelSelector {
                    match_labels: Some(labels.clone()),
                    match_expressions: None,
                }),
                ..Default::default()
            }]),
            MemoryDestination::Cidr(cidr) => Some(vec![ip_peer(cidr)]),
            MemoryDestination::Anywhere { .. } => None,
        };
        policies.push(policy(
            "allow-memory",
            &["Egress"],
            Some(vec![NetworkPolicyEgressRule {
                to,
                ports: Some(vec![port("TCP", m.port)]),
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
            to: Some(cidrs.iter().map(|c| ip_peer(c)).collect()),
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
    let memory = match memory {
        Some(MemoryPeer {
            port,
            to: MemoryDestination::Pods(_),
        }) => format!("; memory database egress on TCP {port} to the store's pods"),
        Some(MemoryPeer {
            port,
            to: MemoryDestination::Cidr(c),
        }) => format!("; memory database egress on TCP {port} to {c}"),
        Some(MemoryPeer {
            port,
            to: MemoryDestination::Anywhere { host },
        }) => format!(
            "; memory database egress on TCP {port} to ANY address (the external host {host} is a name, which NetworkPolicies cannot match)"
        ),
        None => String::new(),
    };
    let dns = match &settings.dns {
        None => "DNS (53) to any address",
        Some(_) => "DNS (53) to networkPolicy.dns",
    };
    Built {
        policies,
        summary: format!("default-deny ingress and egress; {dns}{memory}; {llm}"),
    }
}

fn ip_peer(cidr: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.to_string(),
            except: None,
        }),
        ..Default::default()
    }
}

/// The configured DNS servers as peers: one peer for the pod/namespace labels (both must match),
/// one per CIDR.
fn dns_peers(dns: &DnsPeer) -> Vec<NetworkPolicyPeer> {
    let selector = |labels: &Option<BTreeMap<String, String>>| {
        labels.as_ref().map(|l| LabelSelector {
            match_labels: Some(l.clone()),
            match_expressions: None,
        })
    };
    let mut peers = Vec::new();
    if dns.namespace_labels.is_some() || dns.pod_labels.is_some() {
        peers.push(NetworkPolicyPeer {
            namespace_selector: selector(&dns.namespace_labels),
            pod_selector: selector(&dns.pod_labels),
            ip_block: None,
        });
    }
    peers.extend(dns.cidrs.iter().flatten().map(|c| ip_peer(c)));
    peers
}

/// The CIDR of one address (for an external database given by IP).
pub fn host_cidr(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => format!("{v4}/32"),
        std::net::IpAddr::V6(v6) => format!("{v6}/128"),
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
    fn dns_goes_anywhere_on_53_by_default() {
        let b = build("dev", &owner(), &sel(), &Settings::default(), None);
        let dns = serde_json::to_value(&b.policies[1]).unwrap();
        let rule = &dns["spec"]["egress"][0];
        assert!(rule.get("to").is_none(), "any destination: {rule}");
        assert_eq!(rule["ports"][0]["port"], 53);
        assert_eq!(rule["ports"][1]["protocol"], "TCP");
    }

    #[test]
    fn a_configured_dns_peer_is_used() {
        let s = Settings {
            dns: Some(DnsPeer {
                namespace_labels: Some(BTreeMap::from([(
                    "kubernetes.io/metadata.name".into(),
                    "openshift-dns".into(),
                )])),
                pod_labels: None,
                cidrs: Some(vec!["169.254.20.10/32".into()]),
            }),
            ..Settings::default()
        };
        let b = build("dev", &owner(), &sel(), &s, None);
        let dns = serde_json::to_value(&b.policies[1]).unwrap();
        let to = &dns["spec"]["egress"][0]["to"];
        assert_eq!(
            to[0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "openshift-dns"
        );
        assert!(to[0].get("podSelector").is_none());
        assert_eq!(to[1]["ipBlock"]["cidr"], "169.254.20.10/32");
    }

    #[test]
    fn memory_egress_reaches_the_store_only() {
        let s = Settings {
            enabled: true,
            llm_egress_cidrs: vec!["10.0.0.0/8".into()],
            llm_port: 8443,
            dns: None,
        };
        let pods = MemoryPeer {
            port: 6432,
            to: MemoryDestination::Pods(BTreeMap::from([(
                "aienv.orchestr8.io/store".into(),
                "mem".into(),
            )])),
        };
        let b = build("dev", &owner(), &sel(), &s, Some(&pods));
        assert_eq!(b.policies.len(), 4);
        let mem = serde_json::to_value(&b.policies[2]).unwrap();
        let rule = &mem["spec"]["egress"][0];
        assert_eq!(rule["ports"][0]["port"], 6432);
        assert_eq!(
            rule["to"][0]["podSelector"]["matchLabels"]["aienv.orchestr8.io/store"],
            "mem"
        );
        assert!(
            rule["to"][0].get("namespaceSelector").is_none(),
            "same namespace only"
        );
        assert!(b.summary.contains("10.0.0.0/8") && !b.summary.contains("ANY"));

        let ip = MemoryPeer {
            port: 5432,
            to: MemoryDestination::Cidr(host_cidr("fd00::5".parse().unwrap())),
        };
        let b = build("dev", &owner(), &sel(), &s, Some(&ip));
        let mem = serde_json::to_value(&b.policies[2]).unwrap();
        assert_eq!(
            mem["spec"]["egress"][0]["to"][0]["ipBlock"]["cidr"],
            "fd00::5/128"
        );

        let name = MemoryPeer {
            port: 5432,
            to: MemoryDestination::Anywhere {
                host: "db.example".into(),
            },
        };
        let b = build("dev", &owner(), &sel(), &s, Some(&name));
        let mem = serde_json::to_value(&b.policies[2]).unwrap();
        assert!(mem["spec"]["egress"][0].get("to").is_none());
        assert!(
            b.summary.contains("db.example") && b.summary.contains("ANY"),
            "{}",
            b.summary
        );
    }
}
