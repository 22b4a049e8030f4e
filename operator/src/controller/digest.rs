//! Digests of Secret contents for pod-template annotations: a changed Secret changes the digest
//! and so rolls the pods that read it. Lengths are folded in, so no two contents collide by
//! concatenation.

use k8s_openapi::api::core::v1::Secret;
use sha2::{Digest, Sha256};

/// Hex sha256 over `seed` and every key and value of the Secret's data.
pub fn secret_data(seed: &str, secret: &Secret) -> String {
    let mut h = Sha256::new();
    h.update(seed.as_bytes());
    for (k, v) in secret.data.iter().flatten() {
        h.update((k.len() as u64).to_le_bytes());
        h.update(k.as_bytes());
        h.update((v.0.len() as u64).to_le_bytes());
        h.update(&v.0);
    }
    hex::encode(h.finalize())
}

/// A Secret with these keys and values, for unit tests.
#[cfg(test)]
pub(crate) fn test_secret(pairs: &[(&str, &str)]) -> Secret {
    Secret {
        data: Some(
            pairs
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        k8s_openapi::ByteString(v.as_bytes().to_vec()),
                    )
                })
                .collect(),
        ),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        test_secret(pairs)
    }

    #[test]
    fn any_change_of_keys_values_or_seed_changes_the_digest() {
        let a = secret_data("", &secret(&[("password", "x")]));
        assert_eq!(a, secret_data("", &secret(&[("password", "x")])));
        assert_ne!(a, secret_data("", &secret(&[("password", "y")])));
        assert_ne!(a, secret_data("s", &secret(&[("password", "x")])));
        assert_ne!(
            secret_data("", &secret(&[("ab", "c")])),
            secret_data("", &secret(&[("a", "bc")]))
        );
    }
}
