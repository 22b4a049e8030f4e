//! OpenAI-compatible embeddings: `POST {base}/v1/embeddings` with `{"model","input":[…]}`,
//! answered with `data[].embedding`, each tagged with its input's `index`. Also what vLLM,
//! LiteLLM, llama.cpp's server and text-embeddings-inference speak. Inputs longer than the
//! model's context are the server's business (most truncate, some answer 400 or 413: then the row
//! is isolated as a poison row).

use serde::Deserialize;

use super::provider::{ProviderError, Vectors, Wire};

pub const WIRE: Wire = Wire {
    name: "openai",
    path: "/v1/embeddings",
    body,
    parse,
};

fn body(model: &str, inputs: &[String]) -> serde_json::Value {
    serde_json::json!({ "model": model, "input": inputs, "encoding_format": "float" })
}

#[derive(Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    index: usize,
    embedding: Vec<f32>,
}

/// The vectors of a response in input order (`data` may come in any order; `index` says whose).
pub fn parse(body: &[u8], inputs: usize) -> Result<Vectors, ProviderError> {
    let r: Response = serde_json::from_slice(body)
        .map_err(|e| ProviderError::BadResponse(format!("not an embeddings response: {e}")))?;
    let mut slots: Vec<Option<Vec<f32>>> = vec![None; inputs];
    for item in r.data {
        match slots.get_mut(item.index) {
            Some(slot @ None) => *slot = Some(item.embedding),
            Some(Some(_)) => {
                return Err(ProviderError::BadResponse(format!(
                    "index {} answered twice",
                    item.index
                )));
            }
            None => {
                return Err(ProviderError::BadResponse(format!(
                    "index {} for {inputs} inputs",
                    item.index
                )));
            }
        }
    }
    slots
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            v.ok_or_else(|| ProviderError::BadResponse(format!("no vector for input {i}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_come_back_in_input_order() {
        let body = br#"{"object":"list","data":[
            {"object":"embedding","index":1,"embedding":[2.0,2.5]},
            {"object":"embedding","index":0,"embedding":[1.0,1.5]}],"model":"m"}"#;
        assert_eq!(
            parse(body, 2).unwrap(),
            vec![vec![1.0, 1.5], vec![2.0, 2.5]]
        );
    }

    #[test]
    fn missing_or_extra_vectors_are_bad_answers() {
        let one = br#"{"data":[{"index":0,"embedding":[1.0]}]}"#;
        assert!(matches!(parse(one, 2), Err(ProviderError::BadResponse(_))));
        let far = br#"{"data":[{"index":5,"embedding":[1.0]}]}"#;
        assert!(matches!(parse(far, 1), Err(ProviderError::BadResponse(_))));
        let twice = br#"{"data":[{"index":0,"embedding":[1.0]},{"index":0,"embedding":[1.0]}]}"#;
        assert!(matches!(
            parse(twice, 1),
            Err(ProviderError::BadResponse(_))
        ));
    }
}
