//! Runs one coding CLI against a recording LLM endpoint, inside a network namespace with only
//! loopback: start it as `unshare -n -m --propagation private -- client-sandbox REPORT ENVFILE HOME
//! -- CMD ARGS…` (root). It brings `lo` up, points /etc/resolv.conf (bind mount, private to this
//! mount namespace) at its own DNS catch-all, listens on 127.0.0.1:18080 as an Anthropic Messages
//! and OpenAI chat/Responses server (streaming or not), on :80 and :443 as a TCP catch-all, runs
//! the command with only the variables of ENVFILE (plus HOME and PATH), and writes REPORT (JSON):
//! exit code, output, every HTTP request, every DNS name asked and every other connection.

use std::{
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

/// What every generation request is answered with; the test looks for it in the CLI's output.
pub const REPLY: &str = "aienv-conformance-pong";
const PORT: u16 = 18080;
const RUN_TIMEOUT: Duration = Duration::from_secs(150);

#[derive(Default)]
struct Seen {
    requests: Vec<Value>,
    dns: Vec<String>,
    connections: Vec<u16>,
}

type Shared = Arc<Mutex<Seen>>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, report, env_file, home, sep, cmd @ ..] = args.as_slice() else {
        anyhow::bail!("usage: client-sandbox REPORT ENVFILE HOME -- CMD ARGS…");
    };
    anyhow::ensure!(sep == "--" && !cmd.is_empty(), "usage: … -- CMD ARGS…");
    run_checked("ip", &["link", "set", "lo", "up"])?;
    let resolv = std::env::temp_dir().join(format!("client-sandbox-resolv-{}", std::process::id()));
    std::fs::write(&resolv, "nameserver 127.0.0.1\n")?;
    run_checked(
        "mount",
        &[
            "--bind",
            resolv.to_str().unwrap_or_default(),
            "/etc/resolv.conf",
        ],
    )?;

    let seen: Shared = Arc::default();
    let app = Router::new().fallback(record).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", PORT)).await?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    for port in [80u16, 443] {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok((_conn, _)) = listener.accept().await {
                seen.lock().unwrap().connections.push(port);
            }
        });
    }
    let dns = tokio::net::UdpSocket::bind(("127.0.0.1", 53)).await?;
    {
        let seen = seen.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok((n, _)) = dns.recv_from(&mut buf).await {
                seen.lock().unwrap().dns.push(query_name(&buf[..n]));
            }
        });
    }

    let mut command = tokio::process::Command::new(&cmd[0]);
    command
        .args(&cmd[1..])
        .env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for line in std::fs::read_to_string(env_file)?.lines() {
        if let Some((k, v)) = line.split_once('=') {
            // Values are JSON strings: they may hold newlines (ANTHROPIC_CUSTOM_HEADERS).
            command.env(k, serde_json::from_str::<String>(v)?);
        }
    }
    let child = command.spawn()?;
    let (code, stdout, stderr) =
        match tokio::time::timeout(RUN_TIMEOUT, child.wait_with_output()).await {
            Ok(out) => {
                let out = out?;
                (
                    out.status.code().unwrap_or(-1),
                    String::from_utf8_lossy(&out.stdout).into_owned(),
                    String::from_utf8_lossy(&out.stderr).into_owned(),
                )
            }
            Err(_) => (
                -2,
                String::new(),
                format!("timed out after {RUN_TIMEOUT:?}"),
            ),
        };
    // Late requests (telemetry on exit) still count.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = seen.lock().unwrap();
    let report_json = json!({
        "exit": code, "stdout": stdout, "stderr": stderr,
        "requests": seen.requests, "dns": seen.dns, "connections": seen.connections,
    });
    std::fs::write(report, serde_json::to_vec_pretty(&report_json)?)?;
    Ok(())
}

fn run_checked(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = std::process::Command::new(program).args(args).status()?;
    anyhow::ensure!(status.success(), "{program} {args:?} failed: {status}");
    Ok(())
}

/// The name asked for in a DNS query packet.
fn query_name(packet: &[u8]) -> String {
    let mut labels = Vec::new();
    let mut i = 12;
    while let Some(&len) = packet.get(i) {
        if len == 0 || i + 1 + len as usize > packet.len() {
            break;
        }
        labels.push(String::from_utf8_lossy(&packet[i + 1..i + 1 + len as usize]).into_owned());
        i += 1 + len as usize;
    }
    labels.join(".")
}

async fn record(
    State(seen): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let path = uri.path().to_string();
    seen.lock().unwrap().requests.push(json!({
        "method": method.as_str(), "path": path, "query": uri.query(),
        "authorization": h("authorization"), "x-api-key": h("x-api-key"),
        "user-agent": h("user-agent"), "model": body.get("model"),
        "stream": body.get("stream"),
    }));
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("m")
        .to_string();
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    if method != Method::POST {
        return StatusCode::NOT_FOUND.into_response();
    }
    if path.ends_with("/v1/messages") {
        anthropic(&model, stream)
    } else if path.ends_with("/chat/completions") {
        chat(&model, stream)
    } else if path.ends_with("/responses") {
        responses(&model)
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

fn json_reply(v: Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn sse(events: &[(Option<&str>, Value)]) -> Response {
    let mut body = String::new();
    for (event, data) in events {
        if let Some(e) = event {
            body.push_str(&format!("event: {e}\n"));
        }
        body.push_str(&format!("data: {data}\n\n"));
    }
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

fn anthropic(model: &str, stream: bool) -> Response {
    let usage = json!({"input_tokens": 1, "output_tokens": 1});
    if !stream {
        return json_reply(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": REPLY}],
            "stop_reason": "end_turn", "stop_sequence": null, "usage": usage,
        }));
    }
    sse(&[
        (
            Some("message_start"),
            json!({"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": usage}}),
        ),
        (
            Some("content_block_start"),
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ),
        (
            Some("content_block_delta"),
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": REPLY}}),
        ),
        (
            Some("content_block_stop"),
            json!({"type": "content_block_stop", "index": 0}),
        ),
        (
            Some("message_delta"),
            json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 1}}),
        ),
        (Some("message_stop"), json!({"type": "message_stop"})),
    ])
}

fn chat(model: &str, stream: bool) -> Response {
    let usage = json!({"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2});
    if !stream {
        return json_reply(json!({
            "id": "chat_1", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY},
                         "finish_reason": "stop"}],
            "usage": usage,
        }));
    }
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chat_1", "object": "chat.completion.chunk", "created": 0, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let mut last = chunk(json!({}), json!("stop"));
    last["usage"] = usage;
    let mut body = String::new();
    for data in [
        chunk(json!({"role": "assistant", "content": REPLY}), Value::Null),
        last,
    ] {
        body.push_str(&format!("data: {data}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

fn responses(model: &str) -> Response {
    let item = json!({"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
        "content": [{"type": "output_text", "text": REPLY, "annotations": []}]});
    let response = |status: &str, output: Value| {
        json!({"id": "resp_1", "object": "response", "created_at": 0, "status": status,
               "model": model, "output": output,
               "usage": {"input_tokens": 1, "input_tokens_details": {"cached_tokens": 0},
                         "output_tokens": 1, "output_tokens_details": {"reasoning_tokens": 0},
                         "total_tokens": 2}})
    };
    sse(&[
        (
            Some("response.created"),
            json!({"type": "response.created",
            "response": response("in_progress", json!([]))}),
        ),
        (
            Some("response.output_item.added"),
            json!({"type": "response.output_item.added",
            "output_index": 0, "item": {"type": "message", "id": "msg_1", "status": "in_progress",
            "role": "assistant", "content": []}}),
        ),
        (
            Some("response.content_part.added"),
            json!({"type": "response.content_part.added",
            "item_id": "msg_1", "output_index": 0, "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": []}}),
        ),
        (
            Some("response.output_text.delta"),
            json!({"type": "response.output_text.delta",
            "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": REPLY}),
        ),
        (
            Some("response.output_text.done"),
            json!({"type": "response.output_text.done",
            "item_id": "msg_1", "output_index": 0, "content_index": 0, "text": REPLY}),
        ),
        (
            Some("response.output_item.done"),
            json!({"type": "response.output_item.done",
            "output_index": 0, "item": item}),
        ),
        (
            Some("response.completed"),
            json!({"type": "response.completed",
            "response": response("completed", json!([item]))}),
        ),
    ])
}
