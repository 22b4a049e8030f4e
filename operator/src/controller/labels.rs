//! Labels every controller stamps on what it creates. `app.kubernetes.io/managed-by` has one value
//! for the whole operator, `aienv-operator`, so `kubectl get all -l app.kubernetes.io/managed-by=aienv-operator`
//! finds every child of every kind.

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "aienv-operator";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";
/// Label of the operator's own pod (admitted by the stores' NetworkPolicies).
pub const OPERATOR_LABEL: (&str, &str) = ("app.kubernetes.io/name", "aienv-operator");
