//! LlmProfile: one LLM endpoint an agent can talk to.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::SecretKeyRef;

/// One LLM endpoint (Anthropic, OpenAI, Qwen, Ollama or any OpenAI-compatible server): where it is,
/// which model to use, and where its API key lives. Key material never appears in the spec or status.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "aienv.orchestr8.io",
    version = "v1alpha1",
    kind = "LlmProfile",
    namespaced,
    shortname = "llmp",
    category = "ai",
    status = "LlmProfileStatus",
    doc = "LlmProfile describes one LLM endpoint: provider, base URL, model and the Secret holding its API key.",
    printcolumn(name = "Provider", type_ = "string", json_path = ".spec.provider"),
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model"),
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
        name = "Latency",
        type_ = "integer",
        json_path = ".status.latencyMs",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!has(self.baseUrl) || (".to_string() + &url_rule("self.baseUrl") + ")").message(BASE_URL_MESSAGE).field_path(".baseUrl"))]
#[x_kube(validation = Rule::new(
    "!has(self.baseUrl) || !self.baseUrl.matches('^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*@')"
).message(USERINFO_MESSAGE).field_path(".baseUrl"))]
#[x_kube(validation = Rule::new(
    "has(self.baseUrl) || has(self.endpoints) || self.provider in ['anthropic', 'openai', 'qwen']"
).message("set baseUrl (or endpoints): only provider anthropic, openai and qwen have a default endpoint"))]
#[x_kube(validation = Rule::new(
    "self.provider != 'anthropic' || !has(self.baseUrl) || !self.baseUrl.matches('/v1/?$')"
).message(ANTHROPIC_ROOT_MESSAGE).field_path(".baseUrl"))]
#[x_kube(validation = Rule::new(
    "self.provider == 'ollama' || (has(self.auth) && has(self.auth.secretRef))"
).message("auth.secretRef is required for this provider: point it at the Secret key holding the API key (only provider: ollama may omit it)").field_path(".auth"))]
#[serde(rename_all = "camelCase")]
pub struct LlmProfileSpec {
    /// Who serves the endpoint: anthropic, openai, qwen, ollama or openaiCompatible. It decides
    /// which wire protocol `baseUrl` is and the default endpoints (see docs/llm-profile.md).
    pub provider: Provider,
    /// The short form: the URL of the provider's native protocol. For anthropic the Messages API
    /// root (clients append /v1/messages), e.g. https://api.anthropic.com; for every other
    /// provider an OpenAI-style base that ends in its version (clients append /chat/completions,
    /// /responses, /models), e.g. https://api.openai.com/v1 or http://ollama.models.svc:11434/v1.
    /// Must be https unless the host is cluster-local (*.svc, *.svc.cluster.local, localhost).
    /// Defaults to the provider's public endpoint (anthropic, openai, qwen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub base_url: Option<String>,
    /// The endpoint per wire protocol, for gateways that speak both (LiteLLM, Z.ai, DashScope's
    /// Anthropic-compatible path). Each protocol given here overrides what provider and baseUrl
    /// imply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
    /// Model name the agents use by default.
    #[schemars(length(min = 1, max = 256))]
    pub model: String,
    /// Smaller, faster model for background tasks (Claude Code's haiku slot). Defaults to `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub small_model: Option<String>,
    /// Where the API key lives and how it is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// Extra HTTP headers sent with every request. Never put credentials here: use auth.secretRef.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    #[x_kube(validation = Rule::new(
        "self.all(k, !(k.lowerAscii() in ['authorization', 'x-api-key', 'api-key', 'proxy-authorization']))"
    ).message("headers may not carry credentials (Authorization, x-api-key, api-key): put the key in a Secret and reference it from auth.secretRef"))]
    pub headers: BTreeMap<String, String>,
    /// Request timeout the agents use, in seconds.
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1, max = 86400))]
    pub timeout_seconds: u32,
    /// How often the agents retry a failed request.
    #[serde(default = "default_max_retries")]
    #[schemars(range(min = 0, max = 100))]
    pub max_retries: u32,
    /// TLS settings for endpoints signed by a private CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    /// Extra non-secret environment variables rendered for the agents.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 128))]
    pub env: BTreeMap<String, String>,
    /// Optional live check of the endpoint (GET the provider's models list).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<Probe>,
}

/// The CEL rule for an endpoint URL at `f`: https, or plain http to a cluster-local host.
// The scheme is checked with startsWith rather than url().getScheme(): kube's local CEL evaluator
// returns an empty scheme for `http://localhost:PORT`, and both must agree.
pub fn url_rule(f: &str) -> String {
    format!(
        "isURL({f}) && ({f}.startsWith('https://') || ({f}.startsWith('http://') && (url({f}).getHostname() in ['localhost', '127.0.0.1'] || url({f}).getHostname().endsWith('.svc') || url({f}).getHostname().endsWith('.svc.cluster.local'))))"
    )
}
/// What the user reads when an endpoint URL is rejected.
pub const BASE_URL_MESSAGE: &str = "endpoint URLs must be https://; plain http:// is allowed only for cluster-local hosts (*.svc, *.svc.cluster.local, localhost)";
/// What the user reads when an endpoint URL carries credentials.
pub const USERINFO_MESSAGE: &str = "endpoint URLs must not carry credentials (user:password@host): they would be copied into every agent's config and into status; put the API key in the Secret that auth.secretRef names";
/// What the user reads when an Anthropic root ends in /v1.
pub const ANTHROPIC_ROOT_MESSAGE: &str = "an Anthropic Messages root must not end in /v1: clients append /v1/messages themselves (https://gw.example.com/v1 would be called as /v1/v1/messages); drop the /v1";

/// The endpoint per wire protocol.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// The Anthropic Messages API (Claude Code; Qwen Code's anthropic mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anthropic: Option<AnthropicEndpoint>,
    /// The OpenAI API: chat completions (Qwen Code, generic clients) and, where served, the
    /// Responses API (Codex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openai: Option<OpenAiEndpoint>,
}

/// An Anthropic Messages API root.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(url_rule("self.baseUrl")).message(BASE_URL_MESSAGE).field_path(".baseUrl"))]
#[x_kube(validation = Rule::new("!self.baseUrl.matches('^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*@')").message(USERINFO_MESSAGE).field_path(".baseUrl"))]
#[x_kube(validation = Rule::new("!self.baseUrl.matches('/v1/?$')").message(ANTHROPIC_ROOT_MESSAGE).field_path(".baseUrl"))]
pub struct AnthropicEndpoint {
    /// The root clients append /v1/messages (and /v1/models) to, e.g. https://api.anthropic.com,
    /// https://dashscope-intl.aliyuncs.com/apps/anthropic or https://api.z.ai/api/anthropic.
    #[schemars(length(min = 1, max = 2048))]
    pub base_url: String,
}

/// An OpenAI-style API base.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(url_rule("self.baseUrl")).message(BASE_URL_MESSAGE).field_path(".baseUrl"))]
#[x_kube(validation = Rule::new("!self.baseUrl.matches('^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*@')").message(USERINFO_MESSAGE).field_path(".baseUrl"))]
pub struct OpenAiEndpoint {
    /// The base clients append /chat/completions, /responses and /models to; it normally ends in
    /// the API version, e.g. https://api.openai.com/v1 or http://litellm.ai.svc:4000/v1.
    #[schemars(length(min = 1, max = 2048))]
    pub base_url: String,
    /// Whether it serves the Responses API (POST /responses), the only one Codex speaks.
    /// Defaults to true for provider openai, false otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub responses: Option<bool>,
}

fn default_timeout_seconds() -> u32 {
    600
}
fn default_max_retries() -> u32 {
    2
}

/// API dialect of an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Provider {
    Anthropic,
    Openai,
    Qwen,
    Ollama,
    OpenaiCompatible,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Anthropic => "anthropic",
            Provider::Openai => "openai",
            Provider::Qwen => "qwen",
            Provider::Ollama => "ollama",
            Provider::OpenaiCompatible => "openaiCompatible",
        }
    }
}

/// Where the API key lives and how it is sent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// The Secret key holding the API key. Required unless provider is ollama.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// How the key is sent: bearer (`Authorization: Bearer`, Claude Code's ANTHROPIC_AUTH_TOKEN) or
    /// apiKey (`x-api-key`, Claude Code's ANTHROPIC_API_KEY). OpenAI-style providers always use bearer.
    #[serde(default)]
    pub header_style: HeaderStyle,
}

/// How an API key is sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum HeaderStyle {
    #[default]
    Bearer,
    ApiKey,
}

/// TLS settings for the endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tls {
    /// Secret key holding a PEM CA bundle that signs the endpoint's certificate.
    pub ca_secret_ref: SecretKeyRef,
}

/// Live check of the endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// Turn the probe on or off without removing its settings.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Seconds between probes.
    #[serde(default = "default_probe_interval")]
    #[schemars(range(min = 5, max = 86400))]
    pub interval_seconds: u32,
    /// Seconds before one probe gives up.
    #[serde(default = "default_probe_timeout")]
    #[schemars(range(min = 1, max = 300))]
    pub timeout_seconds: u32,
    /// Consecutive failed probes (no answer, or HTTP 5xx other than 529) before a profile that was
    /// Ready is marked down, so one lost request does not fail every environment over. A
    /// profile that has not been Ready yet is marked down at once. HTTP 429 and 529 never count:
    /// the endpoint is rate-limited or overloaded, not down (Ready stays True, reason
    /// EndpointDegraded).
    #[serde(default = "default_failure_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub failure_threshold: u32,
    /// What is checked, on every protocol the profile offers: `models` lists the models
    /// (`GET {anthropic}/v1/models`, `GET {openai}/models`); `completion` asks for one token on
    /// the real generation path (`POST {anthropic}/v1/messages`, `POST {openai}/chat/completions`),
    /// which catches a model name the endpoint does not serve. Completion probes cost tokens.
    #[serde(default)]
    pub mode: ProbeMode,
    /// Path appended to the native protocol's URL instead of the mode's (e.g. a gateway's
    /// health check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512))]
    pub path: Option<String>,
}

/// What a probe checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum ProbeMode {
    #[default]
    Models,
    Completion,
}

fn default_true() -> bool {
    true
}
fn default_probe_interval() -> u32 {
    60
}
fn default_probe_timeout() -> u32 {
    10
}
fn default_failure_threshold() -> u32 {
    3
}

/// Observed state of an LlmProfile.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LlmProfileStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Accepted, Ready, and when probed EndpointReachable and CredentialsValid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Round-trip time of the last successful probe, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// When the endpoint was last probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe_time: Option<Time>,
    /// Failed probes in a row (see probe.failureThreshold); absent after a good one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
}
