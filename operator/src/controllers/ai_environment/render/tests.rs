//! Golden files per harness × provider (`UPDATE_GOLDEN=1` rewrites them), and the properties every
//! rendering must have: JSON and TOML parse, the two Claude Code sources agree, one key variable.

use std::{collections::BTreeMap, path::PathBuf};

use super::*;
use crate::api::{common::SecretKeyRef, llm_profile::Auth};
use crate::controllers::llm_profile::endpoints;

const KEY: &str = "sk-golden-SECRET-0001";

fn profile(provider: &str) -> LlmProfileSpec {
    let yaml = match provider {
        "anthropic" => {
            r#"
provider: anthropic
baseUrl: https://api.anthropic.com
model: claude-sonnet-4-5
smallModel: claude-haiku-4-5
auth: {secretRef: {name: anthropic, key: apiKey}, headerStyle: apiKey}
headers: {anthropic-beta: "prompt-caching-2024-07-31"}
timeoutSeconds: 300
maxRetries: 4
"#
        }
        "openai" => {
            r#"
provider: openai
baseUrl: https://api.openai.com/v1
model: gpt-5
auth: {secretRef: {name: openai, key: apiKey}}
"#
        }
        "qwen" => {
            r#"
provider: qwen
baseUrl: https://dashscope-intl.aliyuncs.com/compatible-mode/v1
model: qwen3-coder-plus
smallModel: qwen3-coder-flash
auth: {secretRef: {name: qwen, key: apiKey}}
env: {QWEN_EXTRA: "1"}
"#
        }
        "ollama" => {
            r#"
provider: ollama
baseUrl: http://ollama.models.svc:11434/v1
model: "qwen2.5-coder:32b"
timeoutSeconds: 1200
maxRetries: 0
"#
        }
        "openaiCompatible" => {
            r#"
provider: openaiCompatible
baseUrl: https://gateway.example.com/v1
endpoints:
  anthropic: {baseUrl: https://gateway.example.com}
  openai: {baseUrl: https://gateway.example.com/v1, responses: true}
model: my "quoted" model\with-backslash
auth: {secretRef: {name: gw, key: token}}
headers: {X-Team: "agents \"blue\"", X-Route: "a\\b"}
"#
        }
        other => panic!("no fixture for {other}"),
    };
    serde_saphyr::from_str(yaml).expect("fixture parses")
}

const PROVIDERS: [&str; 5] = ["anthropic", "openai", "qwen", "ollama", "openaiCompatible"];
const HARNESSES: [(Harness, &str); 4] = [
    (Harness::ClaudeCode, "claudeCode"),
    (Harness::Codex, "codex"),
    (Harness::QwenCode, "qwenCode"),
    (Harness::Generic, "generic"),
];

fn key_for(p: &LlmProfileSpec) -> Option<&'static str> {
    p.auth
        .as_ref()
        .and_then(|a| a.secret_ref.as_ref())
        .map(|_| KEY)
}

fn render_one(h: Harness, provider: &str) -> Result<Rendered, Problem> {
    let p = profile(provider);
    render(&Input {
        profile_name: provider,
        profile: &p,
        key: key_for(&p),
        harnesses: &[h],
    })
}

/// A rendering, or why the harness cannot use the profile (also a golden file: what a user of
/// that pair reads).
fn as_golden(r: &Result<Rendered, Problem>) -> String {
    let r = match r {
        Ok(r) => r,
        Err(p) => return format!("=== {} ===\n{}\n", p.reason, p.message),
    };
    let mut out = String::new();
    for (k, v) in &r.data {
        out.push_str(&format!("--- {k} ---\n{v}"));
        if !v.ends_with('\n') {
            out.push('\n');
        }
    }
    out.push_str(&format!("=== hash {} ===\n", r.hash));
    out
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

#[test]
fn golden_files_match() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut mismatched = Vec::new();
    for (h, hname) in HARNESSES {
        for provider in PROVIDERS {
            let path = golden_dir().join(format!("{hname}-{provider}.golden"));
            let got = as_golden(&render_one(h, provider));
            if update {
                std::fs::create_dir_all(golden_dir()).unwrap();
                std::fs::write(&path, &got).unwrap();
                continue;
            }
            let want = std::fs::read_to_string(&path).unwrap_or_default();
            if want != got {
                mismatched.push(path.display().to_string());
            }
        }
    }
    assert!(
        mismatched.is_empty(),
        "golden files differ (rerun with UPDATE_GOLDEN=1 and review the diff): {mismatched:?}"
    );
}

#[test]
fn json_and_toml_parse_and_say_what_the_issue_asks() {
    // The gateway offers both protocols, so all four harnesses render from one profile.
    let provider = "openaiCompatible";
    let p = profile(provider);
    let offered = endpoints::resolve(&p);
    let (root, base) = (
        offered.anthropic.clone().unwrap(),
        offered.openai.clone().unwrap().base_url,
    );
    let r = render(&Input {
        profile_name: provider,
        profile: &p,
        key: key_for(&p),
        harnesses: &[
            Harness::ClaudeCode,
            Harness::Codex,
            Harness::QwenCode,
            Harness::Generic,
        ],
    })
    .unwrap();
    let claude: serde_json::Value = serde_json::from_str(&r.data[CLAUDE_SETTINGS]).unwrap();
    // The settings file's env block must agree with the environment variables.
    for (k, v) in claude["env"].as_object().unwrap() {
        assert_eq!(r.data.get(k).map(String::as_str), v.as_str(), "{k}");
    }
    assert_eq!(
        claude["env"]["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"],
        "1"
    );
    // Each harness gets the endpoint of its protocol.
    assert_eq!(r.data["ANTHROPIC_BASE_URL"], root);
    assert_eq!(r.data["OPENAI_BASE_URL"], base);

    let qwen: serde_json::Value = serde_json::from_str(&r.data[QWEN_SETTINGS]).unwrap();
    assert_eq!(qwen["model"]["name"], p.model.as_str());
    assert_eq!(qwen["privacy"]["usageStatisticsEnabled"], false);
    assert_eq!(r.data["QWEN_USAGE_STATISTICS_ENABLED"], "false");

    let codex: toml::Table = r.data[CODEX_CONFIG].parse().unwrap();
    assert_eq!(codex["model"].as_str(), Some(p.model.as_str()));
    assert_eq!(codex["model_provider"].as_str(), Some(CODEX_PROVIDER_ID));
    let block = &codex["model_providers"][CODEX_PROVIDER_ID];
    assert_eq!(block["base_url"].as_str(), Some(base.as_str()));
    assert_eq!(block["wire_api"].as_str(), Some("responses"));
    assert_eq!(
        block["stream_idle_timeout_ms"].as_integer(),
        Some(i64::from(p.timeout_seconds) * 1000)
    );
    assert_eq!(
        block["request_max_retries"].as_integer(),
        Some(p.max_retries.into())
    );
    for (k, v) in &p.headers {
        assert_eq!(block["http_headers"][k].as_str(), Some(v.as_str()));
    }
    assert_eq!(block["env_key"].as_str(), Some(CODEX_KEY_ENV));
    assert_eq!(r.data[CODEX_KEY_ENV], KEY);
    assert_eq!(codex["analytics"]["enabled"].as_bool(), Some(false));
    assert_eq!(codex["otel"]["metrics_exporter"].as_str(), Some("none"));
    assert_eq!(codex["features"]["plugins"].as_bool(), Some(false));

    assert_eq!(r.data[PROFILE_ENV], provider);
    assert_eq!(r.data["OPENAI_MODEL"], p.model);
}

#[test]
fn a_harness_without_its_protocol_is_refused_by_name() {
    let anthropic_only = profile("anthropic");
    let e = render(&Input {
        profile_name: "a",
        profile: &anthropic_only,
        key: Some(KEY),
        harnesses: &[Harness::ClaudeCode, Harness::Codex],
    })
    .unwrap_err();
    assert_eq!(e.reason, "HarnessUnsupported");
    assert!(
        e.message.contains("codex") && e.message.contains("endpoints.openai"),
        "{}",
        e.message
    );
    // Chat-only OpenAI endpoints cannot serve Codex (it speaks only the Responses API).
    let qwen = profile("qwen");
    let e = render(&Input {
        profile_name: "q",
        profile: &qwen,
        key: Some(KEY),
        harnesses: &[Harness::Codex],
    })
    .unwrap_err();
    assert!(
        e.message.contains("endpoints.openai.responses: true"),
        "{}",
        e.message
    );
    // Qwen Code falls back to its Anthropic mode.
    let r = render(&Input {
        profile_name: "a",
        profile: &anthropic_only,
        key: Some(KEY),
        harnesses: &[Harness::QwenCode],
    })
    .unwrap();
    assert_eq!(r.data["ANTHROPIC_BASE_URL"], "https://api.anthropic.com");
    assert_eq!(r.data["ANTHROPIC_API_KEY"], KEY);
    assert!(!r.data.contains_key("OPENAI_BASE_URL"));
}

#[test]
fn a_keyless_profile_gives_claude_code_a_placeholder_token() {
    let p = profile("ollama");
    let r = render(&Input {
        profile_name: "o",
        profile: &p,
        key: None,
        harnesses: &[Harness::ClaudeCode, Harness::Generic],
    })
    .unwrap();
    assert_eq!(r.data["ANTHROPIC_AUTH_TOKEN"], NO_KEY_PLACEHOLDER);
    assert_eq!(
        r.data["ANTHROPIC_BASE_URL"],
        "http://ollama.models.svc:11434"
    );
    assert_eq!(
        r.data["OPENAI_BASE_URL"],
        "http://ollama.models.svc:11434/v1"
    );
    assert_eq!(r.data["OPENAI_API_KEY"], NO_KEY_PLACEHOLDER);
}

#[test]
fn claude_gets_exactly_one_key_variable_by_header_style() {
    let mut p = profile("anthropic");
    let one = |p: &LlmProfileSpec| {
        render(&Input {
            profile_name: "a",
            profile: p,
            key: Some(KEY),
            harnesses: &[Harness::ClaudeCode],
        })
        .unwrap()
    };
    let r = one(&p);
    assert_eq!(r.data["ANTHROPIC_API_KEY"], KEY);
    assert!(!r.data.contains_key("ANTHROPIC_AUTH_TOKEN"));
    p.auth = Some(Auth {
        secret_ref: Some(SecretKeyRef {
            name: "s".into(),
            key: "k".into(),
        }),
        header_style: HeaderStyle::Bearer,
    });
    let r = one(&p);
    assert_eq!(r.data["ANTHROPIC_AUTH_TOKEN"], KEY);
    assert!(!r.data.contains_key("ANTHROPIC_API_KEY"));
    assert_eq!(
        r.data["ANTHROPIC_SMALL_FAST_MODEL"],
        r.data["ANTHROPIC_DEFAULT_HAIKU_MODEL"]
    );
    assert_eq!(
        r.data["ANTHROPIC_CUSTOM_HEADERS"],
        "anthropic-beta: prompt-caching-2024-07-31"
    );
}

#[test]
fn hash_is_stable_and_moves_with_key_model_and_profile() {
    let p = profile("openai");
    let base = Input {
        profile_name: "p",
        profile: &p,
        key: Some("k1"),
        harnesses: &[Harness::Generic, Harness::Codex],
    };
    let a = render(&base).unwrap();
    // Harness order and duplicates do not matter.
    let b = render(&Input {
        harnesses: &[Harness::Codex, Harness::Generic, Harness::Codex],
        ..base
    })
    .unwrap();
    assert_eq!(a, b);
    assert_ne!(
        a.hash,
        render(&Input {
            key: Some("k2"),
            ..base
        })
        .unwrap()
        .hash
    );
    assert_ne!(
        a.hash,
        render(&Input {
            profile_name: "q",
            ..base
        })
        .unwrap()
        .hash
    );
    let mut p2 = p.clone();
    p2.model = "other".into();
    assert_ne!(
        a.hash,
        render(&Input {
            profile: &p2,
            ..base
        })
        .unwrap()
        .hash
    );
    assert_eq!(a.hash.len(), 64);
}

#[test]
fn debug_output_never_shows_values() {
    let p = profile("openai");
    let r = render(&Input {
        profile_name: "p",
        profile: &p,
        key: Some(KEY),
        harnesses: &[Harness::Generic],
    })
    .unwrap();
    assert!(!format!("{r:?}").contains(KEY));
}

#[test]
fn rendered_variables_beat_the_profile_env() {
    let mut p = profile("openai");
    p.env = BTreeMap::from([("OPENAI_MODEL".to_string(), "spoofed".to_string())]);
    let r = render(&Input {
        profile_name: "p",
        profile: &p,
        key: Some(KEY),
        harnesses: &[Harness::Generic],
    })
    .unwrap();
    assert_eq!(r.data["OPENAI_MODEL"], "gpt-5");
}
