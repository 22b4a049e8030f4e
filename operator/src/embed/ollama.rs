//! Ollama: `POST {base}/api/embed` with `{"model","input":[…]}`, answered with `embeddings` in
//! input order. Ollama truncates inputs longer than the model's context itself (its `truncate`
//! option defaults to true).

use serde::Deserialize;

use super::provider::{ProviderError, Vectors, Wire};

pub const WIRE: Wire = Wire {
    name: "ollama",
    path: "/api/embed",
    body,
    parse,
};

fn body(model: &str, inputs: &[String]) -> serde_json::Value {
    serde_json::json!({ "model": model, "input": inputs })
}

#[derive(Deserialize)]
struct Response {
    embeddings: Vectors,
}

pub fn parse(body: &[u8], inputs: usize) -> Result<Vectors, ProviderError> {
    let r: Response = serde_json::from_slice(body)
        .map_err(|e| ProviderError::BadResponse(format!("not an /api/embed response: {e}")))?;
    if r.embeddings.len() != inputs {
        return Err(ProviderError::BadResponse(format!(
            "{} vectors for {inputs} inputs",
            r.embeddings.len()
        )));
    }
    Ok(r.embeddings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_in_order_and_counted() {
        let body = br#"{"model":"m","embeddings":[[1.0,2.0],[3.0,4.0]]}"#;
        assert_eq!(
            parse(body, 2).unwrap(),
            vec![vec![1.0, 2.0], vec![3.0, 4.0]]
        );
        assert!(matches!(parse(body, 3), Err(ProviderError::BadResponse(_))));
        assert!(matches!(
            parse(b"{}", 1),
            Err(ProviderError::BadResponse(_))
        ));
    }
}
