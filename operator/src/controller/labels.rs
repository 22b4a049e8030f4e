//! Labels every controller stamps on what it creates, and the ports children share. `app.kubernetes.io/managed-by` has one value
//! for the whole operator, `aienv-operator`, so `kubectl get all -l app.kubernetes.io/managed-by=aienv-operator`
//! finds every child of every kind.

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "aienv-operator";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// Label of the operator's own pod (admitted by the stores' NetworkPolicies).
pub const OPERATOR_LABEL: (&str, &str) = ("app.kubernetes.io/name", "aienv-operator");
/// Annotation on children applied through a `ChildSet`: sha256 of what was applied.
pub const SPEC_HASH_ANNOTATION: &str = "aienv.orchestr8.io/spec-hash";
/// PostgreSQL's port: the managed store's Services and pod, the default of a connection URI
/// without one, and the agents' memory egress rule.
pub const POSTGRES_PORT: u16 = 5432;
/// DNS, for the agents' egress rule.
pub const DNS_PORT: u16 = 53;
