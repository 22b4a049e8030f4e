//! Which wire protocols a profile offers, and where: `endpoints` as given, else what provider and
//! the `baseUrl` short form imply. Pure. Everything that calls an endpoint (the probe, the rendered
//! configs) goes through [`resolve`], so a path is right by construction.

use crate::api::llm_profile::{LlmProfileSpec, Provider};

pub const ANTHROPIC_DEFAULT: &str = "https://api.anthropic.com";
pub const OPENAI_DEFAULT: &str = "https://api.openai.com/v1";
/// DashScope (Alibaba Cloud Model Studio), international: OpenAI-compatible base and the
/// Anthropic-compatible root it documents for Claude Code.
pub const DASHSCOPE_OPENAI: &str = "https://dashscope-intl.aliyuncs.com/compatible-mode/v1";
pub const DASHSCOPE_ANTHROPIC: &str = "https://dashscope-intl.aliyuncs.com/apps/anthropic";

/// An OpenAI-style base and whether it serves the Responses API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenAi {
    pub base_url: String,
    pub responses: bool,
}

/// The protocols a profile offers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Anthropic Messages root (clients append /v1/messages).
    pub anthropic: Option<String>,
    /// OpenAI base (clients append /chat/completions, /responses, /models).
    pub openai: Option<OpenAi>,
}

impl Resolved {
    /// Every URL, for checks that apply to all of them.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.anthropic
            .as_deref()
            .into_iter()
            .chain(self.openai.as_ref().map(|o| o.base_url.as_str()))
    }
}

fn trim(url: &str) -> String {
    url.trim_end_matches('/').to_string()
}

/// The protocols of `spec`.
pub fn resolve(spec: &LlmProfileSpec) -> Resolved {
    let base = spec.base_url.as_deref().map(trim);
    let responses_default = spec.provider == Provider::Openai;
    let openai = |url: String| OpenAi {
        base_url: url,
        responses: responses_default,
    };
    let mut r = match spec.provider {
        Provider::Anthropic => Resolved {
            anthropic: Some(base.unwrap_or_else(|| ANTHROPIC_DEFAULT.into())),
            openai: None,
        },
        Provider::Openai => Resolved {
            anthropic: None,
            openai: Some(openai(base.unwrap_or_else(|| OPENAI_DEFAULT.into()))),
        },
        Provider::Qwen => {
            let base = base.unwrap_or_else(|| DASHSCOPE_OPENAI.into());
            Resolved {
                anthropic: dashscope_anthropic(&base),
                openai: Some(openai(base)),
            }
        }
        // Ollama serves the OpenAI API under /v1 and the Anthropic Messages API at its root.
        Provider::Ollama => Resolved {
            anthropic: base
                .as_deref()
                .map(|b| b.strip_suffix("/v1").unwrap_or(b).to_string()),
            openai: base.as_deref().map(|b| {
                openai(if b.ends_with("/v1") {
                    b.to_string()
                } else {
                    format!("{b}/v1")
                })
            }),
        },
        Provider::OpenaiCompatible => Resolved {
            anthropic: None,
            openai: base.map(openai),
        },
    };
    if let Some(e) = &spec.endpoints {
        if let Some(a) = &e.anthropic {
            r.anthropic = Some(trim(&a.base_url));
        }
        if let Some(o) = &e.openai {
            r.openai = Some(OpenAi {
                base_url: trim(&o.base_url),
                responses: o.responses.unwrap_or(responses_default),
            });
        }
    }
    r
}

/// DashScope's Anthropic-compatible root on the same host as its OpenAI-compatible base.
fn dashscope_anthropic(openai_base: &str) -> Option<String> {
    let rest = openai_base.strip_prefix("https://")?;
    let (host, path) = rest.split_once('/')?;
    let dashscope = host == "dashscope.aliyuncs.com" || host == "dashscope-intl.aliyuncs.com";
    (dashscope && path == "compatible-mode/v1").then(|| format!("https://{host}/apps/anthropic"))
}

/// A warning for an OpenAI base without a version segment (`/v1`, `/v4`, `/api/v3`…): clients
/// append /chat/completions to it directly. Some vendors really serve them there, so this is a
/// condition, not a rejection.
pub fn unversioned_openai(r: &Resolved) -> Option<String> {
    let o = r.openai.as_ref()?;
    let path = o
        .base_url
        .split_once("://")
        .map(|(_, rest)| rest.split_once('/').map(|(_, p)| p).unwrap_or(""))
        .unwrap_or("");
    let versioned = path.split('/').any(|seg| {
        seg.strip_prefix('v')
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
    });
    (!versioned).then(|| {
        format!(
            "the OpenAI base {} has no version segment: clients call {}/chat/completions and {}/responses; most servers want …/v1 (set endpoints.openai.baseUrl), a few really serve these at the root — then ignore this",
            o.base_url, o.base_url, o.base_url
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> LlmProfileSpec {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn the_short_form_is_the_providers_native_protocol() {
        let a = resolve(&spec("{provider: anthropic, model: m}"));
        assert_eq!(a.anthropic.as_deref(), Some(ANTHROPIC_DEFAULT));
        assert_eq!(a.openai, None);
        let o = resolve(&spec("{provider: openai, model: m}"));
        assert_eq!(
            o.openai,
            Some(OpenAi {
                base_url: OPENAI_DEFAULT.into(),
                responses: true
            })
        );
        let gw = resolve(&spec(
            "{provider: openaiCompatible, baseUrl: 'http://litellm.ai.svc:4000/v1/', model: m}",
        ));
        assert_eq!(
            gw.openai.as_ref().unwrap().base_url,
            "http://litellm.ai.svc:4000/v1"
        );
        assert!(!gw.openai.unwrap().responses);
        assert_eq!(gw.anthropic, None);
    }

    #[test]
    fn qwen_on_dashscope_offers_its_anthropic_compatible_root_too() {
        let q = resolve(&spec("{provider: qwen, model: m}"));
        assert_eq!(q.openai.unwrap().base_url, DASHSCOPE_OPENAI);
        assert_eq!(q.anthropic.as_deref(), Some(DASHSCOPE_ANTHROPIC));
        let cn = resolve(&spec(
            "{provider: qwen, baseUrl: 'https://dashscope.aliyuncs.com/compatible-mode/v1', model: m}",
        ));
        assert_eq!(
            cn.anthropic.as_deref(),
            Some("https://dashscope.aliyuncs.com/apps/anthropic")
        );
        let elsewhere = resolve(&spec(
            "{provider: qwen, baseUrl: 'https://qwen.internal.example/v1', model: m}",
        ));
        assert_eq!(elsewhere.anthropic, None);
    }

    #[test]
    fn ollama_offers_openai_under_v1_and_anthropic_at_its_root() {
        for url in ["http://ollama.m.svc:11434", "http://ollama.m.svc:11434/v1"] {
            let r = resolve(&spec(&format!(
                "{{provider: ollama, baseUrl: '{url}', model: m}}"
            )));
            assert_eq!(r.openai.unwrap().base_url, "http://ollama.m.svc:11434/v1");
            assert_eq!(r.anthropic.as_deref(), Some("http://ollama.m.svc:11434"));
        }
    }

    #[test]
    fn endpoints_override_each_protocol() {
        let r = resolve(&spec(
            "{provider: openaiCompatible, baseUrl: 'https://gw.example.com/v1', model: m,
              endpoints: {anthropic: {baseUrl: 'https://gw.example.com'}, openai: {baseUrl: 'https://gw.example.com/v1', responses: true}}}",
        ));
        assert_eq!(r.anthropic.as_deref(), Some("https://gw.example.com"));
        assert!(r.openai.unwrap().responses);
        let zai = resolve(&spec(
            "{provider: anthropic, model: glm-4.6, endpoints: {anthropic: {baseUrl: 'https://api.z.ai/api/anthropic'}}}",
        ));
        assert_eq!(
            zai.anthropic.as_deref(),
            Some("https://api.z.ai/api/anthropic")
        );
    }

    #[test]
    fn an_openai_base_without_a_version_is_a_warning() {
        let bare = resolve(&spec(
            "{provider: openaiCompatible, baseUrl: 'https://gw.example.com', model: m}",
        ));
        let w = unversioned_openai(&bare).unwrap();
        assert!(w.contains("https://gw.example.com/chat/completions"), "{w}");
        for ok in [
            "https://gw.example.com/v1",
            "https://open.bigmodel.cn/api/paas/v4",
            "https://ark.example.com/api/v3",
        ] {
            let r = resolve(&spec(&format!(
                "{{provider: openaiCompatible, baseUrl: '{ok}', model: m}}"
            )));
            assert_eq!(unversioned_openai(&r), None, "{ok}");
        }
    }
}
