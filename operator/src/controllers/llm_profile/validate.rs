//! Pure checks of an LlmProfile and the Secrets it references. No client, no clock, no IO.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};

use crate::api::{common::SecretKeyRef, llm_profile::LlmProfileSpec};

/// Why a profile cannot be used, with a message a person can act on. Never holds secret values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Problem {
    /// Stable CamelCase reason, used for the condition and the Event.
    pub reason: &'static str,
    pub message: String,
}

impl Problem {
    fn new(reason: &'static str, message: String) -> Self {
        Self { reason, message }
    }
}

/// Checks the spec for what the schema cannot express: header and variable names.
pub fn validate_spec(spec: &LlmProfileSpec) -> Result<(), Problem> {
    for (name, value) in &spec.headers {
        if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(Problem::new(
                "InvalidHeader",
                format!(
                    "headers: {name:?} is not a valid HTTP header name (letters, digits and -)"
                ),
            ));
        }
        if reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(Problem::new(
                "InvalidHeader",
                format!(
                    "headers: the value of {name:?} contains characters not allowed in HTTP headers"
                ),
            ));
        }
    }
    for name in spec.env.keys() {
        if !is_env_name(name) {
            return Err(Problem::new(
                "InvalidEnv",
                format!(
                    "env: {name:?} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)"
                ),
            ));
        }
    }
    Ok(())
}

fn is_env_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The value at `reference` in `secret` (None when the Secret does not exist).
/// `what` names the value for the message, e.g. "the API key".
pub fn secret_value(
    reference: &SecretKeyRef,
    secret: Option<&Secret>,
    namespace: &str,
    what: &str,
) -> Result<Vec<u8>, Problem> {
    let Some(secret) = secret else {
        return Err(Problem::new(
            "SecretNotFound",
            format!(
                "Secret {:?} not found in namespace {namespace:?}: create it with key {:?} holding {what}",
                reference.name, reference.key
            ),
        ));
    };
    let mut merged: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    if let Some(data) = &secret.data {
        for (k, ByteString(v)) in data {
            merged.insert(k, v.clone());
        }
    }
    if let Some(data) = &secret.string_data {
        for (k, v) in data {
            merged.insert(k, v.clone().into_bytes());
        }
    }
    match merged.remove(reference.key.as_str()) {
        Some(v) if v.iter().all(u8::is_ascii_whitespace) => Err(Problem::new(
            "SecretKeyEmpty",
            format!(
                "key {:?} of Secret {:?} is empty: put {what} there",
                reference.key, reference.name
            ),
        )),
        Some(v) => Ok(trim_ascii(v)),
        None => {
            let keys: Vec<&str> = merged.keys().copied().collect();
            Err(Problem::new(
                "SecretKeyNotFound",
                format!(
                    "Secret {:?} has no key {:?} (its keys: [{}]): add the key or fix auth.secretRef.key",
                    reference.name,
                    reference.key,
                    keys.join(", ")
                ),
            ))
        }
    }
}

/// Keys pasted with a trailing newline (`echo key | kubectl create secret ...`) are common.
fn trim_ascii(v: Vec<u8>) -> Vec<u8> {
    v.trim_ascii().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn key_ref() -> SecretKeyRef {
        SecretKeyRef {
            name: "anthropic".into(),
            key: "api-key".into(),
        }
    }

    #[test]
    fn missing_secret_names_it_and_the_key() {
        let p = secret_value(&key_ref(), None, "agents", "the API key").unwrap_err();
        assert_eq!(p.reason, "SecretNotFound");
        assert!(p.message.contains("\"anthropic\"") && p.message.contains("\"api-key\""));
        assert!(p.message.contains("\"agents\""));
    }

    #[test]
    fn missing_key_lists_the_keys_but_never_values() {
        let s = secret(&[("token", "sk-very-secret")]);
        let p = secret_value(&key_ref(), Some(&s), "agents", "the API key").unwrap_err();
        assert_eq!(p.reason, "SecretKeyNotFound");
        assert!(p.message.contains("token"));
        assert!(!p.message.contains("sk-very-secret"));
    }

    #[test]
    fn empty_key_is_reported() {
        let s = secret(&[("api-key", " \n")]);
        let p = secret_value(&key_ref(), Some(&s), "agents", "the API key").unwrap_err();
        assert_eq!(p.reason, "SecretKeyEmpty");
    }

    #[test]
    fn value_is_trimmed() {
        let s = secret(&[("api-key", "sk-abc\n")]);
        assert_eq!(
            secret_value(&key_ref(), Some(&s), "ns", "k").unwrap(),
            b"sk-abc"
        );
    }

    #[test]
    fn bad_header_and_env_names_are_rejected() {
        let mut spec: LlmProfileSpec = serde_json::from_value(serde_json::json!({
            "provider": "openai", "baseUrl": "https://x", "model": "m",
            "headers": {"bad header": "v"}
        }))
        .unwrap();
        assert_eq!(validate_spec(&spec).unwrap_err().reason, "InvalidHeader");
        spec.headers.clear();
        spec.env.insert("1BAD".into(), "v".into());
        assert_eq!(validate_spec(&spec).unwrap_err().reason, "InvalidEnv");
        spec.env.clear();
        spec.env.insert("GOOD_NAME".into(), "v".into());
        assert!(validate_spec(&spec).is_ok());
    }
}
