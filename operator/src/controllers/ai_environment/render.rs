//! Rendering of the active LlmProfile into the Secret `<env>-llm`: the environment variables and
//! files every harness in `llm.harnesses` reads. Pure: no client, no clock, no IO.
//!
//! Each harness is rendered from the wire protocol it speaks (`endpoints::resolve`), so the path
//! a CLI appends lands on the right endpoint. What each CLI reads is established by running the
//! published CLIs against a recording endpoint (tests/tests/clients.rs); nothing rendered here
//! makes an agent contact any host other than the profile's endpoints.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::{
    api::{
        ai_environment::Harness,
        llm_profile::{HeaderStyle, LlmProfileSpec},
    },
    controller::Problem,
    controllers::llm_profile::endpoints::{self, Resolved},
};

/// Always rendered: the name of the active profile.
pub const PROFILE_ENV: &str = "AIENV_PROFILE";
/// File key of Claude Code's settings (mount at `~/.claude/settings.json`).
pub const CLAUDE_SETTINGS: &str = "claude-settings.json";
/// File key of Codex's config (mount as a single file at `~/.codex/config.toml`).
pub const CODEX_CONFIG: &str = "codex-config.toml";
/// File key of Qwen Code's settings (mount at `~/.qwen/settings.json`).
pub const QWEN_SETTINGS: &str = "qwen-settings.json";
/// The variable Codex's provider block reads the key from (`env_key`).
pub const CODEX_KEY_ENV: &str = "AIENV_API_KEY";
/// Provider id of the `[model_providers.<id>]` block in the Codex config.
pub const CODEX_PROVIDER_ID: &str = "aienv";
/// Sent as the key when the profile has none (ollama): Claude Code (ANTHROPIC_AUTH_TOKEN) and the
/// OpenAI-style CLIs (OPENAI_API_KEY) refuse to start without one, and a keyless server ignores it.
pub const NO_KEY_PLACEHOLDER: &str = "no-key";

/// What is rendered from.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    /// Name of the active LlmProfile.
    pub profile_name: &'a str,
    pub profile: &'a LlmProfileSpec,
    /// The API key (already trimmed). None for keyless profiles.
    pub key: Option<&'a str>,
    pub harnesses: &'a [Harness],
}

/// The Secret's data and its sha256. `Debug` never prints values.
#[derive(Clone, PartialEq, Eq)]
pub struct Rendered {
    pub data: BTreeMap<String, String>,
    /// Hex sha256 over every key and value: the config hash written to the workloads.
    pub hash: String,
}

impl std::fmt::Debug for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rendered")
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("hash", &self.hash)
            .finish()
    }
}

/// Whether the profile offers every requested harness the protocol it speaks: Claude Code the
/// Anthropic Messages API, Codex the OpenAI Responses API, Qwen Code OpenAI chat (or, without
/// one, Anthropic Messages), generic clients OpenAI chat.
pub fn check_harnesses(harnesses: &[Harness], offered: &Resolved) -> Result<(), Problem> {
    let missing = |h: &str, what: &str| {
        Err(Problem::new(
            "HarnessUnsupported",
            format!("harness {h} cannot use this profile: {what}"),
        ))
    };
    for h in harnesses {
        match h {
            Harness::ClaudeCode if offered.anthropic.is_none() => {
                return missing(
                    "claudeCode",
                    "it speaks the Anthropic Messages API and the profile offers none; set endpoints.anthropic.baseUrl (the root clients append /v1/messages to) if the server has one",
                );
            }
            Harness::Codex => match &offered.openai {
                None => {
                    return missing(
                        "codex",
                        "it speaks the OpenAI Responses API and the profile offers no OpenAI endpoint; set endpoints.openai.baseUrl and endpoints.openai.responses: true",
                    );
                }
                Some(o) if !o.responses => {
                    return missing(
                        "codex",
                        "it speaks only the OpenAI Responses API (POST /responses; chat completions are no longer supported by Codex); set endpoints.openai.responses: true if the server serves it",
                    );
                }
                Some(_) => {}
            },
            Harness::QwenCode if offered.openai.is_none() && offered.anthropic.is_none() => {
                return missing(
                    "qwenCode",
                    "the profile offers neither an OpenAI nor an Anthropic endpoint",
                );
            }
            Harness::Generic if offered.openai.is_none() => {
                return missing(
                    "generic",
                    "generic clients read OPENAI_BASE_URL and the profile offers no OpenAI endpoint; set endpoints.openai.baseUrl",
                );
            }
            _ => {}
        }
    }
    Ok(())
}

/// Render every requested harness, each from the protocol it speaks. Deterministic: the same
/// input always gives the same bytes.
pub fn render(input: &Input<'_>) -> Result<Rendered, Problem> {
    let offered = endpoints::resolve(input.profile);
    check_harnesses(input.harnesses, &offered)?;
    let mut data = BTreeMap::new();
    // The profile's extra variables first, so a rendered harness variable always wins.
    for (k, v) in &input.profile.env {
        data.insert(k.clone(), v.clone());
    }
    let mut harnesses = input.harnesses.to_vec();
    harnesses.sort();
    harnesses.dedup();
    for h in harnesses {
        // check_harnesses made sure each has its endpoint.
        let anthropic = offered.anthropic.as_deref().unwrap_or_default();
        let openai = offered
            .openai
            .as_ref()
            .map(|o| o.base_url.as_str())
            .unwrap_or_default();
        let part = match h {
            Harness::ClaudeCode => claude_code(input, anthropic),
            Harness::Codex => codex(input, openai),
            Harness::QwenCode if offered.openai.is_none() => {
                qwen_code(input, anthropic_env(input, anthropic))
            }
            Harness::QwenCode => qwen_code(input, openai_env(input, openai)),
            Harness::Generic => openai_env(input, openai),
        };
        data.extend(part);
    }
    data.insert(PROFILE_ENV.into(), input.profile_name.into());
    let hash = hash(&data);
    Ok(Rendered { data, hash })
}

/// The Secret `name` holding `rendered`, its config hash in an annotation. Labels and the owner
/// are stamped where it is applied (`ChildSet`).
pub fn secret(name: &str, rendered: &Rendered) -> k8s_openapi::api::core::v1::Secret {
    use k8s_openapi::{ByteString, apimachinery::pkg::apis::meta::v1::ObjectMeta};
    k8s_openapi::api::core::v1::Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            annotations: Some(BTreeMap::from([(
                super::rollout::HASH_ANNOTATION.to_string(),
                rendered.hash.clone(),
            )])),
            ..Default::default()
        },
        data: Some(
            rendered
                .data
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
                .collect(),
        ),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

/// The config hash of an environment bound to a memory store: the rendered hash folded with the
/// store's connection Secret (`<store>-app`), keys and values.
pub fn with_connection(
    rendered_hash: &str,
    connection: &k8s_openapi::api::core::v1::Secret,
) -> String {
    crate::controller::digest::secret_data(rendered_hash, connection)
}

/// sha256 over length-prefixed keys and values in key order.
pub fn hash(data: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (k, v) in data {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.len() as u64).to_be_bytes());
        h.update(v.as_bytes());
    }
    hex::encode(h.finalize())
}

fn small_model(p: &LlmProfileSpec) -> &str {
    p.small_model.as_deref().unwrap_or(&p.model)
}

fn timeout_ms(p: &LlmProfileSpec) -> String {
    (u64::from(p.timeout_seconds) * 1000).to_string()
}

/// Claude Code: environment variables, and the same values in the settings file's `env` block
/// (settings.json `env` overrides the process environment, so the two must never disagree).
fn claude_code(input: &Input<'_>, root: &str) -> BTreeMap<String, String> {
    let p = input.profile;
    let mut env = BTreeMap::new();
    env.insert("ANTHROPIC_BASE_URL".to_string(), root.to_string());
    let style = p.auth.as_ref().map(|a| a.header_style).unwrap_or_default();
    let var = match (input.key, style) {
        (Some(_), HeaderStyle::ApiKey) => "ANTHROPIC_API_KEY",
        _ => "ANTHROPIC_AUTH_TOKEN",
    };
    // Claude Code refuses to start without a key ("Not logged in"); a keyless server ignores it.
    env.insert(
        var.to_string(),
        input.key.unwrap_or(NO_KEY_PLACEHOLDER).to_string(),
    );
    env.insert("ANTHROPIC_MODEL".into(), p.model.clone());
    env.insert("ANTHROPIC_SMALL_FAST_MODEL".into(), small_model(p).into());
    env.insert(
        "ANTHROPIC_DEFAULT_HAIKU_MODEL".into(),
        small_model(p).into(),
    );
    env.insert("API_TIMEOUT_MS".into(), timeout_ms(p));
    env.insert("CLAUDE_CODE_MAX_RETRIES".into(), p.max_retries.to_string());
    if !p.headers.is_empty() {
        let lines: Vec<String> = p.headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        env.insert("ANTHROPIC_CUSTOM_HEADERS".into(), lines.join("\n"));
    }
    env.insert(
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(),
        "1".into(),
    );
    let settings = serde_json::json!({ "env": env });
    let mut out = env;
    out.insert(CLAUDE_SETTINGS.into(), pretty_json(&settings));
    out
}

/// Codex: one TOML file (it ignores OPENAI_BASE_URL), plus the key under `env_key`.
fn codex(input: &Input<'_>, base: &str) -> BTreeMap<String, String> {
    let p = input.profile;
    let id = CODEX_PROVIDER_ID;
    let mut t = String::new();
    t.push_str(&format!(
        "# Rendered by aienv from LlmProfile {}.\n",
        toml_str(input.profile_name)
    ));
    t.push_str(&format!("model = {}\n", toml_str(&p.model)));
    t.push_str(&format!("model_provider = {}\n\n", toml_str(id)));
    t.push_str(&format!("[model_providers.{id}]\n"));
    t.push_str(&format!("name = {}\n", toml_str(input.profile_name)));
    t.push_str(&format!("base_url = {}\n", toml_str(base)));
    if input.key.is_some() {
        t.push_str(&format!("env_key = {}\n", toml_str(CODEX_KEY_ENV)));
    }
    t.push_str("wire_api = \"responses\"\n");
    t.push_str(&format!("request_max_retries = {}\n", p.max_retries));
    t.push_str(&format!("stream_max_retries = {}\n", p.max_retries));
    t.push_str(&format!("stream_idle_timeout_ms = {}\n", timeout_ms(p)));
    if !p.headers.is_empty() {
        t.push_str(&format!("\n[model_providers.{id}.http_headers]\n"));
        for (k, v) in &p.headers {
            t.push_str(&format!("{} = {}\n", toml_str(k), toml_str(v)));
        }
    }
    t.push_str("\n[analytics]\nenabled = false\n");
    t.push_str("\n[otel]\nmetrics_exporter = \"none\"\n");
    t.push_str("\n[features]\nplugins = false\n");
    let mut out = BTreeMap::new();
    out.insert(CODEX_CONFIG.to_string(), t);
    if let Some(key) = input.key {
        out.insert(CODEX_KEY_ENV.to_string(), key.to_string());
    }
    out
}

/// Qwen Code: its connection (`connection`: the three OpenAI variables, all required, or in its
/// Anthropic mode the three ANTHROPIC_* ones, which select that mode and send the key as Bearer),
/// its timeout, usage statistics off; and a settings file with the same model (its `model.name`
/// beats the environment) and statistics off (older releases honour only the file).
fn qwen_code(input: &Input<'_>, mut out: BTreeMap<String, String>) -> BTreeMap<String, String> {
    let p = input.profile;
    out.insert("QWEN_CODE_API_TIMEOUT_MS".into(), timeout_ms(p));
    out.insert("QWEN_USAGE_STATISTICS_ENABLED".into(), "false".into());
    let settings = serde_json::json!({
        "model": { "name": p.model },
        "privacy": { "usageStatisticsEnabled": false },
    });
    out.insert(QWEN_SETTINGS.into(), pretty_json(&settings));
    out
}

/// Qwen Code's Anthropic mode, for a profile with only an Anthropic endpoint.
fn anthropic_env(input: &Input<'_>, root: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("ANTHROPIC_BASE_URL".into(), root.to_string()),
        (
            "ANTHROPIC_API_KEY".into(),
            input.key.unwrap_or(NO_KEY_PLACEHOLDER).to_string(),
        ),
        ("ANTHROPIC_MODEL".into(), input.profile.model.clone()),
    ])
}

/// Any OpenAI-compatible client.
fn openai_env(input: &Input<'_>, base: &str) -> BTreeMap<String, String> {
    let p = input.profile;
    let mut out = BTreeMap::new();
    out.insert("OPENAI_BASE_URL".into(), base.to_string());
    out.insert(
        "OPENAI_API_KEY".into(),
        input.key.unwrap_or(NO_KEY_PLACEHOLDER).to_string(),
    );
    out.insert("OPENAI_MODEL".into(), p.model.clone());
    out
}

fn pretty_json(v: &serde_json::Value) -> String {
    // serde_json maps are BTreeMaps here (no preserve_order), so the output is sorted and stable.
    let mut s = serde_json::to_string_pretty(v).expect("JSON values always serialize");
    s.push('\n');
    s
}

/// A TOML basic string with every character TOML requires escaped.
fn toml_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests;
