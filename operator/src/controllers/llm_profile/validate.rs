//! Pure checks of an LlmProfile and the Secrets it references. No client, no clock, no IO.

use std::collections::BTreeMap;

use k8s_openapi::{ByteString, api::core::v1::Secret};

use crate::api::{common::SecretKeyRef, llm_profile::LlmProfileSpec};
pub use crate::controller::Problem;

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

/// Label a Secret must carry (value `"true"`) before a profile may read an API key from it: without
/// it, any profile author could have any Secret of the namespace sent to any URL.
pub const LLM_KEY_LABEL: &str = "aienv.orchestr8.io/llm-key";

/// Whether the Secret opted in to being read as an LLM API key.
pub fn allows_llm_key(secret: &Secret) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LLM_KEY_LABEL))
        .is_some_and(|v| v == "true")
}

/// The API key at `reference`: only from a Secret that opted in with [`LLM_KEY_LABEL`]. Says
/// nothing about the content of a Secret that did not.
pub fn api_key_value(
    reference: &SecretKeyRef,
    secret: Option<&Secret>,
    namespace: &str,
) -> Result<Vec<u8>, Problem> {
    if let Some(s) = secret
        && !allows_llm_key(s)
    {
        return Err(Problem::new(
            "SecretNotAllowed",
            format!(
                "Secret {:?} is not labelled for use as an LLM API key: if it is meant for LlmProfiles, run `kubectl label secret {} -n {namespace} {LLM_KEY_LABEL}=true`",
                reference.name, reference.name
            ),
        ));
    }
    secret_value(reference, secret, namespace, "the API key").map_err(|p| match p.reason {
        "SecretNotFound" => Problem::new(
            p.reason,
            format!("{}, labelled {LLM_KEY_LABEL}=true", p.message),
        ),
        _ => p,
    })
}

/// The value at `reference` in `secret` (None when the Secret does not exist).
/// `what` names the value for the message, e.g. "the API key". The Secret's other key names are
/// listed only when it opted in with [`LLM_KEY_LABEL`].
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
            let keys = if allows_llm_key(secret) {
                let keys: Vec<&str> = merged.keys().copied().collect();
                format!(" (its keys: [{}])", keys.join(", "))
            } else {
                String::new()
            };
            Err(Problem::new(
                "SecretKeyNotFound",
                format!(
                    "Secret {:?} has no key {:?}{keys}: add the key or fix the secretRef's key",
                    reference.name, reference.key,
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
        let mut s = unlabelled(pairs);
        s.metadata.labels = Some([(LLM_KEY_LABEL.to_string(), "true".to_string())].into());
        s
    }

    fn unlabelled(pairs: &[(&str, &str)]) -> Secret {
        crate::controller::digest::test_secret(pairs)
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
    fn api_keys_come_only_from_secrets_that_opted_in() {
        let s = unlabelled(&[("api-key", "sk-abc")]);
        let p = api_key_value(&key_ref(), Some(&s), "agents").unwrap_err();
        assert_eq!(p.reason, "SecretNotAllowed");
        assert!(
            p.message.contains(
                "kubectl label secret anthropic -n agents aienv.orchestr8.io/llm-key=true"
            ),
            "{}",
            p.message
        );
        assert!(!p.message.contains("sk-abc"));
        let mut wrong = s.clone();
        wrong.metadata.labels = Some([(LLM_KEY_LABEL.to_string(), "yes".to_string())].into());
        assert_eq!(
            api_key_value(&key_ref(), Some(&wrong), "agents")
                .unwrap_err()
                .reason,
            "SecretNotAllowed"
        );
        let ok = secret(&[("api-key", "sk-abc")]);
        assert_eq!(
            api_key_value(&key_ref(), Some(&ok), "agents").unwrap(),
            b"sk-abc"
        );
        let missing = api_key_value(&key_ref(), None, "agents").unwrap_err();
        assert_eq!(missing.reason, "SecretNotFound");
        assert!(
            missing.message.contains(LLM_KEY_LABEL),
            "{}",
            missing.message
        );
    }

    #[test]
    fn a_secret_that_did_not_opt_in_keeps_its_key_names() {
        let s = unlabelled(&[("db-password", "x"), ("tls.key", "y")]);
        let p = secret_value(&key_ref(), Some(&s), "agents", "a PEM CA bundle").unwrap_err();
        assert_eq!(p.reason, "SecretKeyNotFound");
        assert!(
            !p.message.contains("db-password") && !p.message.contains("tls.key"),
            "{}",
            p.message
        );
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
