//! Search by text: the query embedded by the store's own provider — the same code the workers
//! embed memories with, so query and memories share one vector space — then hybrid search.

use std::{sync::Arc, time::Duration};

use crate::{
    api::memory_store::{EmbeddingProvider, EmbeddingProviderType},
    memory::{Filter, Hit, Memories},
};

use super::{ApiKey, EmbedError, Provider, ProviderError, ProviderKind};

impl ProviderKind {
    /// The protocol a MemoryStore's provider type speaks (TEI serves OpenAI's /v1/embeddings).
    pub fn of(t: EmbeddingProviderType) -> Self {
        match t {
            EmbeddingProviderType::Ollama => ProviderKind::Ollama,
            EmbeddingProviderType::Openai | EmbeddingProviderType::Tei => ProviderKind::OpenAi,
            EmbeddingProviderType::Local => ProviderKind::Local,
        }
    }
}

/// Where a store's provider is reached from here, which need not be where its workers reach it.
#[derive(Clone, Debug, Default)]
pub struct Reach {
    /// The API's URL from here (default: the store's `embedding.provider.url`).
    pub base_url: Option<String>,
    /// The local model's directory on this machine (the store's path is inside the workers).
    pub model_dir: Option<std::path::PathBuf>,
    pub api_key: Option<ApiKey>,
}

/// One query's request: a person or an agent is waiting for it.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// The provider a MemoryStore names, built as the workers build it, named as the store's model.
pub fn store_provider(
    spec: &EmbeddingProvider,
    model: &str,
    reach: Reach,
) -> Result<Arc<dyn Provider>, EmbedError> {
    let kind = ProviderKind::of(spec.type_);
    if kind == ProviderKind::Local {
        let Some(dir) = reach.model_dir else {
            return Err(EmbedError::Config(
                "this store embeds with a local model: give its directory on this machine (--model-dir), the same model files the workers load".into(),
            ));
        };
        return super::local_provider(&dir, None, model);
    }
    let Some(base) = reach.base_url.or_else(|| spec.url.clone()) else {
        return Err(EmbedError::Config(
            "the store's embedding.provider has no url".into(),
        ));
    };
    Ok(super::provider(
        kind,
        &base,
        model,
        reach.api_key,
        QUERY_TIMEOUT,
    )?)
}

/// The query's vector, checked against the store's column like the workers' vectors are.
pub async fn embed_query(
    provider: &dyn Provider,
    dimensions: u32,
    text: &str,
) -> Result<Vec<f32>, EmbedError> {
    let vectors = provider.embed(&[text.to_string()]).await?;
    let Some(v) = vectors.into_iter().next() else {
        return Err(ProviderError::BadResponse("no vector for the query".into()).into());
    };
    if v.len() != dimensions as usize {
        return Err(EmbedError::DimensionMismatch {
            expected: dimensions,
            got: v.len(),
            model: provider.model().to_string(),
        });
    }
    Ok(v)
}

/// Hybrid search (vector and full text, rank-fused) for `text`, the query embedded by `provider`.
pub async fn search(
    memories: &Memories,
    provider: &dyn Provider,
    text: &str,
    k: u32,
    filter: &Filter,
) -> Result<Vec<Hit>, EmbedError> {
    let v = embed_query(provider, memories.dimensions, text).await?;
    Ok(memories.search_hybrid(text, &v, k, filter).await?)
}
