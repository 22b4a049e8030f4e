//! The memory schema and API against the harness PostgreSQL 18 + pgvector: migrations apply once,
//! racing operators serialise, a dimension change keeps every row, and store/search/hybrid return
//! the expected rows of a small labelled corpus.

use aienv::memory::index_build::prepare_and_build;
use aienv::{
    api::memory_store::MemoryStoreSpec,
    memory::{
        Filter, Memories, MemoryError, MemoryType, NewMemory, NewTurn, Role,
        ddl::StoreLayout,
        schema::{self, IndexState},
    },
};
use aienv_tests::testenv::{TEST_SCHEMA, require_env};
use sqlx::Row;

fn layout(yaml: &str) -> StoreLayout {
    let spec: MemoryStoreSpec = serde_saphyr::from_str(yaml).unwrap();
    StoreLayout::from_spec(&spec).unwrap()
}

fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// Reproducible values in [-0.5, 0.5) (xorshift from `seed`).
fn noise(mut seed: u64) -> impl FnMut() -> f32 {
    move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 10_000) as f32 / 10_000.0 - 0.5
    }
}

/// A 4-d direction per topic, slightly perturbed per item.
fn topic_vec(topic: usize, jitter: f32) -> Vec<f32> {
    let mut v = vec![0.05f32; 4];
    v[topic % 4] = 1.0;
    v[(topic + 1) % 4] += jitter;
    unit(&v)
}

#[tokio::test]
async fn migrations_apply_once_and_rerun_is_a_no_op() -> anyhow::Result<()> {
    let Some(env) = require_env() else {
        return Ok(());
    };
    let db = env.test_database("mem_migr").await?;
    let l = layout("mode: external\n");
    let first = db.prepare(&l).await?;
    assert_eq!(
        first.applied.iter().map(|a| a.0).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    assert_eq!(first.schema_version, 6);
    assert!(
        first
            .pgvector_version
            .as_deref()
            .unwrap()
            .starts_with("0.8")
    );
    assert_eq!(
        first.index,
        IndexState::Ready("memories_embedding_hnsw_cosine_m16_efc64".into())
    );
    let second = db.prepare(&l).await?;
    assert!(second.applied.is_empty(), "{:?}", second.applied);
    assert_eq!(second.schema_version, 6);
    assert_eq!(second.index, first.index);
    let typ: String = sqlx::query_scalar(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'memories'::regclass AND attname = 'embedding'",
    )
    .fetch_one(&db.pool)
    .await?;
    assert_eq!(typ, "vector(768)");
    let storage: String = sqlx::query_scalar(
        "SELECT attstorage::text FROM pg_attribute WHERE attrelid = 'memories'::regclass AND attname = 'embedding'",
    )
    .fetch_one(&db.pool)
    .await?;
    assert_eq!(
        storage, "p",
        "768-d vectors are stored inline, uncompressed"
    );
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE tablename IN ('memories', 'agent_conversations') ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await?;
    for want in [
        "memories_content_tsv_idx",
        "memories_agent_id_idx",
        "memories_session_id_idx",
        "memories_memory_type_idx",
        "agent_conversations_session_idx",
    ] {
        assert!(indexes.iter().any(|i| i == want), "{want} in {indexes:?}");
    }
    // An index parameter change builds the new index and drops the old one.
    let l2 = layout("mode: external\nindex: {hnsw: {m: 8, efConstruction: 32}}\n");
    let third = db.prepare(&l2).await?;
    assert_eq!(
        third.index,
        IndexState::Ready("memories_embedding_hnsw_cosine_m8_efc32".into())
    );
    assert_eq!(
        third.dropped_indexes,
        ["memories_embedding_hnsw_cosine_m16_efc64"]
    );
    db.cleanup().await
}

#[tokio::test]
async fn racing_migrations_do_not_corrupt_anything() -> anyhow::Result<()> {
    let Some(env) = require_env() else {
        return Ok(());
    };
    let db = env.test_database("mem_race").await?;
    let l = layout("mode: external\n");
    let mut pools = Vec::new();
    for _ in 0..4 {
        pools.push(db.pool_on(TEST_SCHEMA, 2).await?);
    }
    let runs = futures::future::join_all(
        pools
            .iter()
            .map(|p| prepare_and_build(p, &db.target, &l, "64MB")),
    )
    .await;
    let mut applied = Vec::new();
    for r in runs {
        let r = r?;
        assert_eq!(r.schema_version, 6);
        assert!(matches!(r.index, IndexState::Ready(_)));
        applied.extend(r.applied.into_iter().map(|a| a.0));
    }
    applied.sort();
    assert_eq!(
        applied,
        [1, 2, 3, 4, 5, 6],
        "each migration applied exactly once"
    );
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM aienv_schema_migrations")
        .fetch_one(&db.pool)
        .await?;
    assert_eq!(rows, 6);
    let config_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM aienv_store_config")
        .fetch_one(&db.pool)
        .await?;
    assert_eq!(config_rows, 1);
    let invalid: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_index WHERE indrelid = 'memories'::regclass AND NOT indisvalid",
    )
    .fetch_one(&db.pool)
    .await?;
    assert_eq!(invalid, 0);
    for p in pools {
        p.close().await;
    }
    db.cleanup().await
}

#[tokio::test]
async fn dimension_change_requires_reindex_and_drops_nothing() -> anyhow::Result<()> {
    let Some(env) = require_env() else {
        return Ok(());
    };
    let db = env.test_database("mem_dims").await?;
    let l4 = layout("mode: external\nembedding: {dimensions: 4}\n");
    db.prepare(&l4).await?;
    let mem = Memories::open(db.pool.clone()).await?;
    let mut m = NewMemory::new("kept across the change", MemoryType::Insight);
    m.embedding = Some(topic_vec(0, 0.0));
    mem.store(&m).await?;

    let l8 = layout("mode: external\nembedding: {dimensions: 8, model: other-model}\n");
    let p = db.prepare(&l8).await?;
    let r = p.reindex.expect("ReindexRequired");
    assert_eq!((r.stored_dimensions, r.wanted_dimensions), (4, 8));
    assert_eq!(p.index, IndexState::Blocked);
    assert!(r.describe().contains("dimensions 4 -> 8"));
    let row = sqlx::query("SELECT count(*) AS n, count(embedding) AS e FROM memories")
        .fetch_one(&db.pool)
        .await?;
    assert_eq!(row.get::<i64, _>("n"), 1);
    assert_eq!(row.get::<i64, _>("e"), 1);
    let typ: String = sqlx::query_scalar(
        "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'memories'::regclass AND attname = 'embedding'",
    )
    .fetch_one(&db.pool)
    .await?;
    assert_eq!(typ, "vector(4)", "the column was not altered");
    // Reverting the spec clears it.
    assert!(db.prepare(&l4).await?.reindex.is_none());
    db.cleanup().await
}

#[tokio::test]
async fn memory_api_on_a_labelled_corpus() -> anyhow::Result<()> {
    let Some(env) = require_env() else {
        return Ok(());
    };
    let db = env.test_database("mem_api").await?;
    db.prepare(&layout("mode: external\nembedding: {dimensions: 4}\n"))
        .await?;
    let mem = Memories::open(db.pool.clone()).await?;
    assert_eq!(mem.dimensions, 4);

    // topic 0: databases, topic 1: kubernetes, topic 2: cooking, topic 3: music.
    let corpus = [
        (
            0,
            "alice",
            "postgres vacuum tuning keeps bloat down",
            MemoryType::Insight,
        ),
        (
            0,
            "bob",
            "pgvector hnsw index speeds up nearest neighbour search",
            MemoryType::Rag,
        ),
        (
            1,
            "alice",
            "kubernetes statefulset gives pods stable identities",
            MemoryType::Agent,
        ),
        (
            1,
            "bob",
            "a networkpolicy restricts ingress to the database pod",
            MemoryType::Workflow,
        ),
        (
            2,
            "alice",
            "slow roasted tomatoes with garlic and thyme",
            MemoryType::Agent,
        ),
        (
            3,
            "bob",
            "the fugue modulates to the dominant key",
            MemoryType::Agent,
        ),
    ];
    let batch: Vec<NewMemory> = corpus
        .iter()
        .enumerate()
        .map(|(i, (topic, agent, text, kind))| {
            let mut m = NewMemory::new(*text, *kind);
            m.agent_id = Some(agent.to_string());
            m.session_id = Some(format!("s{}", i % 2));
            m.metadata = serde_json::json!({"i": i});
            m.embedding = Some(topic_vec(*topic, i as f32 * 0.01));
            m
        })
        .collect();
    let ids = mem.store_batch(&batch).await?;
    assert_eq!(ids.len(), corpus.len());
    // One without an embedding: pending for the workers, invisible to vector search.
    let pending = mem
        .store(&NewMemory::new("postgres replication lag", MemoryType::Rag))
        .await?;
    let c = schema::counts(&db.pool).await?;
    assert_eq!(
        (c.memories, c.pending_embeddings, c.failed_embeddings),
        (7, 1, 0)
    );

    let knn = mem
        .search_vector(&topic_vec(0, 0.0), 2, &Filter::default())
        .await?;
    assert_eq!(knn.iter().map(|h| h.id).collect::<Vec<_>>(), ids[..2]);
    assert!(knn[0].score <= knn[1].score);

    let only_bob = Filter {
        agent_id: Some("bob".into()),
        ..Default::default()
    };
    let knn = mem.search_vector(&topic_vec(1, 0.0), 1, &only_bob).await?;
    assert_eq!(knn[0].id, ids[3]);
    let typed = Filter {
        memory_type: Some(MemoryType::Workflow),
        ..Default::default()
    };
    assert_eq!(
        mem.search_vector(&topic_vec(0, 0.0), 5, &typed)
            .await?
            .iter()
            .map(|h| h.id)
            .collect::<Vec<_>>(),
        [ids[3]]
    );

    let text = mem.search_text("postgres", 10, &Filter::default()).await?;
    let text_ids: Vec<i64> = text.iter().map(|h| h.id).collect();
    assert!(
        text_ids.contains(&ids[0]) && text_ids.contains(&pending),
        "{text_ids:?}"
    );
    assert_eq!(text_ids.len(), 2);

    // Hybrid: the row that is both textually and semantically close comes first.
    let hybrid = mem
        .search_hybrid("hnsw index", &topic_vec(0, 0.0), 3, &Filter::default())
        .await?;
    assert_eq!(hybrid[0].id, ids[1], "{hybrid:?}");

    // Injection attempts are plain values.
    let evil = Filter {
        agent_id: Some("x' OR '1'='1".into()),
        ..Default::default()
    };
    assert!(
        mem.search_vector(&topic_vec(0, 0.0), 5, &evil)
            .await?
            .is_empty()
    );
    assert!(
        mem.search_text("'); DROP TABLE memories; --", 5, &Filter::default())
            .await?
            .is_empty()
    );

    // Dimension mismatch is a clear error.
    let err = mem
        .search_vector(&[1.0, 0.0], 1, &Filter::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            MemoryError::DimensionMismatch {
                expected: 4,
                got: 2,
                ..
            }
        ),
        "{err}"
    );
    let mut bad = NewMemory::new("x", MemoryType::Agent);
    bad.embedding = Some(vec![1.0; 5]);
    assert!(matches!(
        mem.store(&bad).await,
        Err(MemoryError::DimensionMismatch { .. })
    ));

    // Conversations.
    let turns = [
        (Role::User, "hello"),
        (Role::Assistant, "hi, how can I help?"),
        (Role::User, "remember the vacuum settings"),
    ]
    .map(|(role, content)| NewTurn {
        role,
        content: content.into(),
        metadata: serde_json::json!({}),
    });
    mem.append_turns("alice", "s1", &turns).await?;
    mem.append_turns("alice", "other", &turns[..1]).await?;
    let recent = mem.recent_history("alice", "s1", 2).await?;
    assert_eq!(
        recent
            .iter()
            .map(|t| t.content.as_str())
            .collect::<Vec<_>>(),
        ["hi, how can I help?", "remember the vacuum settings"]
    );
    assert_eq!(recent[1].role, "user");
    db.cleanup().await
}

#[tokio::test]
async fn filtered_search_returns_k_results_at_one_percent_selectivity() -> anyhow::Result<()> {
    let Some(env) = require_env() else {
        return Ok(());
    };
    let db = env.test_database("mem_sel").await?;
    let dims = 16usize;
    db.prepare(&layout("mode: external\nembedding: {dimensions: 16}\n"))
        .await?;
    let mem = Memories::open(db.pool.clone()).await?;
    // 5,000 rows; agent "rare" owns every 100th (1 %).
    let mut rnd = noise(7);
    for chunk in 0..5 {
        let batch: Vec<NewMemory> = (0..1000)
            .map(|i| {
                let n = chunk * 1000 + i;
                let mut m = NewMemory::new(format!("row {n}"), MemoryType::Rag);
                m.agent_id = Some(if n % 100 == 0 {
                    "rare".into()
                } else {
                    format!("a{}", n % 7)
                });
                m.embedding = Some((0..dims).map(|_| rnd()).collect());
                m
            })
            .collect();
        mem.store_batch(&batch).await?;
    }
    sqlx::query("ANALYZE memories").execute(&db.pool).await?;
    let filter = Filter {
        agent_id: Some("rare".into()),
        ..Default::default()
    };
    for q in 0..5 {
        let query: Vec<f32> = (0..dims)
            .map(|i| ((q * 31 + i) % 11) as f32 - 5.0)
            .collect();
        let got = mem.search_vector(&query, 20, &filter).await?;
        assert_eq!(got.len(), 20, "query {q}: iterative scan must fill k");
        assert!(got.iter().all(|h| h.agent_id.as_deref() == Some("rare")));
        let exact = mem.search_vector_exact(&query, 20, &filter).await?;
        let exact_ids: std::collections::HashSet<i64> = exact.iter().map(|h| h.id).collect();
        let hits = got.iter().filter(|h| exact_ids.contains(&h.id)).count();
        assert!(hits >= 18, "query {q}: recall {hits}/20");
    }
    db.cleanup().await
}

#[tokio::test]
async fn a_connected_handle_searches_with_the_stores_settings_without_a_transaction()
-> anyhow::Result<()> {
    let Some(env) = require_env() else {
        return Ok(());
    };
    let db = env.test_database("mem_conn").await?;
    let dims = 16usize;
    db.prepare(&layout(
        "mode: external\nembedding: {dimensions: 16}\nindex: {hnsw: {m: 8, efConstruction: 32, efSearch: 37}}\n",
    ))
    .await?;
    let by_tx = Memories::open(db.pool.clone()).await?;
    let options = aienv::memory::store_connect_options(db.url.parse()?, TEST_SCHEMA);
    let connected = Memories::connect(options, 2).await?;
    assert_eq!(connected.search_breadth, 37);
    let mut rnd = noise(11);
    let batch: Vec<NewMemory> = (0..2000)
        .map(|n| {
            let mut m = NewMemory::new(format!("row {n}"), MemoryType::Rag);
            m.agent_id = Some(format!("a{}", n % 50));
            m.embedding = Some((0..dims).map(|_| rnd()).collect());
            m
        })
        .collect();
    connected.store_batch(&batch).await?;
    sqlx::query("ANALYZE memories").execute(&db.pool).await?;
    for q in 0..5 {
        let query: Vec<f32> = (0..dims).map(|_| rnd()).collect();
        // Same settings, same plan: the same rows as the transaction path.
        let a = by_tx.search_vector(&query, 10, &Filter::default()).await?;
        let b = connected
            .search_vector(&query, 10, &Filter::default())
            .await?;
        let ids = |h: &[aienv::memory::Hit]| h.iter().map(|h| h.id).collect::<Vec<_>>();
        assert_eq!(ids(&a), ids(&b), "query {q}");
        assert_eq!(b.len(), 10);
        // A filtered search still turns on its iterative scan, and fills k.
        let only = Filter {
            agent_id: Some("a7".into()),
            ..Default::default()
        };
        let f = connected.search_vector(&query, 20, &only).await?;
        assert_eq!(f.len(), 20, "query {q}: filtered k");
        assert!(f.iter().all(|h| h.agent_id.as_deref() == Some("a7")));
    }
    // Every pooled connection starts with the store's settings, and a filtered search's
    // transaction-local settings do not leak into the session.
    let settings: (String, String) = sqlx::query_as(
        "SELECT current_setting('hnsw.ef_search'), current_setting('hnsw.iterative_scan')",
    )
    .fetch_one(connected.pool())
    .await?;
    assert_eq!(settings, ("37".to_string(), "off".to_string()));
    connected.pool().close().await;
    db.cleanup().await
}

#[tokio::test]
async fn a_half_precision_index_is_used_by_search_and_keeps_recall() -> anyhow::Result<()> {
    let Some(env) = require_env() else {
        return Ok(());
    };
    let db = env.test_database("mem_half").await?;
    let dims = 32usize;
    let prepared = db
        .prepare(&layout(
            "mode: external\nembedding: {dimensions: 32}\nindex: {hnsw: {m: 16, efConstruction: 64}, precision: half}\n",
        ))
        .await?;
    assert!(
        matches!(&prepared.index, IndexState::Ready(n) if n.ends_with("_half")),
        "{:?}",
        prepared.index
    );
    let mem = Memories::open(db.pool.clone()).await?;
    assert_eq!(mem.precision, aienv::api::memory_store::Precision::Half);
    let mut rnd = noise(23);
    for _ in 0..3 {
        let batch: Vec<NewMemory> = (0..1000)
            .map(|n| {
                let mut m = NewMemory::new(format!("row {n}"), MemoryType::Rag);
                m.embedding = Some(unit(&(0..dims).map(|_| rnd()).collect::<Vec<_>>()));
                m
            })
            .collect();
        mem.store_batch(&batch).await?;
    }
    sqlx::query("ANALYZE memories").execute(&db.pool).await?;
    // The half index serves the API's query (the column stays full precision): its scan count
    // goes up by the API's searches, read on the one connection that made them.
    let one = db.pool_on(TEST_SCHEMA, 1).await?;
    let scans = || async {
        sqlx::query("SELECT pg_stat_force_next_flush()")
            .execute(&one)
            .await?;
        sqlx::query("SELECT 1").execute(&one).await?;
        let n: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(idx_scan), 0)::bigint FROM pg_stat_user_indexes WHERE indexrelname LIKE '%\\_half'",
        )
        .fetch_one(&one)
        .await?;
        anyhow::Ok(n)
    };
    let before = scans().await?;
    let on_one = Memories::open(one.clone()).await?;
    for _ in 0..3 {
        let q: Vec<f32> = unit(&(0..dims).map(|_| rnd()).collect::<Vec<_>>());
        on_one.search_vector(&q, 10, &Filter::default()).await?;
    }
    let after = scans().await?;
    assert!(after >= before + 3, "half index scans {before} -> {after}");
    let (mut found, mut wanted) = (0, 0);
    for _ in 0..10 {
        let q: Vec<f32> = unit(&(0..dims).map(|_| rnd()).collect::<Vec<_>>());
        let got = mem.search_vector(&q, 10, &Filter::default()).await?;
        let exact = mem.search_vector_exact(&q, 10, &Filter::default()).await?;
        assert_eq!(got.len(), 10);
        let truth: std::collections::HashSet<i64> = exact.iter().map(|h| h.id).collect();
        found += got.iter().filter(|h| truth.contains(&h.id)).count();
        wanted += truth.len();
    }
    let recall = found as f64 / wanted as f64;
    assert!(recall >= 0.9, "recall {recall:.3}");
    db.cleanup().await
}
