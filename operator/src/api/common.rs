//! Types shared by several kinds.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every aienv kind.
pub const GROUP: &str = "aienv.orchestr8.io";
/// API version of every aienv kind.
pub const VERSION: &str = "v1alpha1";

/// A key in a Secret in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret, in the same namespace as this object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key within the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A Secret in the same namespace, used as a whole (every key is read).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret, in the same namespace as this object.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Compute resources for a container, as in a Pod spec (`requests`, `limits`).
pub type Resources = k8s_openapi::api::core::v1::ResourceRequirements;

/// Every aienv kind reports `status.conditions`.
pub trait HasConditions {
    /// The conditions, empty before the first status write.
    fn conditions(&self) -> &[Condition];
}

macro_rules! impl_has_conditions {
    ($($kind:ty),*) => {$(
        impl HasConditions for $kind {
            fn conditions(&self) -> &[Condition] {
                self.status.as_ref().map(|s| &s.conditions[..]).unwrap_or(&[])
            }
        }
    )*};
}

impl_has_conditions!(
    super::AiEnvironment,
    super::BackupSchedule,
    super::LlmProfile,
    super::MemoryStore
);
