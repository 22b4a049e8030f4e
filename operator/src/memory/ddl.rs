//! Per-store DDL built from validated numbers only: the embedding column's dimension and the vector
//! index with the operator class for the metric. Pure: no IO. Integers are formatted; no string from
//! a user ever reaches the SQL text.

use crate::{
    api::memory_store::{MAX_INDEXED_DIMENSIONS, MemoryStoreSpec, Metric, Precision},
    controller::Problem,
};

/// Prefix of every vector index the operator creates on `memories.embedding`.
pub const INDEX_PREFIX: &str = "memories_embedding_";

/// The index the spec asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexKind {
    Hnsw { m: u32, ef_construction: u32 },
    IvfFlat { lists: u32 },
}

/// The validated layout of one store's embedding column and index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreLayout {
    pub dimensions: u32,
    pub model: String,
    pub metric: Metric,
    pub index: IndexKind,
    /// Query-time candidate list (hnsw.ef_search) or lists probed (ivfflat.probes).
    pub search_breadth: u32,
    /// What the index holds (the column is always full precision).
    pub precision: Precision,
}

impl StoreLayout {
    /// Validate the numbers the DDL is built from (the CRD's schema checks them too; this is the
    /// last line before SQL).
    pub fn from_spec(spec: &MemoryStoreSpec) -> Result<Self, Problem> {
        let e = &spec.embedding;
        if e.dimensions == 0 || e.dimensions > MAX_INDEXED_DIMENSIONS {
            return Err(Problem::invalid_spec(format!(
                "embedding.dimensions {} is outside 1..={MAX_INDEXED_DIMENSIONS}",
                e.dimensions
            )));
        }
        if e.model.trim().is_empty() {
            return Err(Problem::invalid_spec("embedding.model is empty"));
        }
        let (index, search_breadth) = match (&spec.index.hnsw, &spec.index.ivfflat) {
            (Some(h), None) => {
                if !(2..=100).contains(&h.m) {
                    return Err(Problem::invalid_spec(format!(
                        "index.hnsw.m {} is outside 2..=100",
                        h.m
                    )));
                }
                if !(4..=1000).contains(&h.ef_construction) || h.ef_construction < 2 * h.m {
                    return Err(Problem::invalid_spec(format!(
                        "index.hnsw.efConstruction {} must be in 4..=1000 and at least 2 * m ({})",
                        h.ef_construction,
                        2 * h.m
                    )));
                }
                if !(1..=1000).contains(&h.ef_search) {
                    return Err(Problem::invalid_spec(format!(
                        "index.hnsw.efSearch {} is outside 1..=1000",
                        h.ef_search
                    )));
                }
                (
                    IndexKind::Hnsw {
                        m: h.m,
                        ef_construction: h.ef_construction,
                    },
                    h.ef_search,
                )
            }
            (None, Some(i)) => {
                if !(1..=32768).contains(&i.lists) || !(1..=32768).contains(&i.probes) {
                    return Err(Problem::invalid_spec(format!(
                        "index.ivfflat lists {} and probes {} must be in 1..=32768",
                        i.lists, i.probes
                    )));
                }
                (IndexKind::IvfFlat { lists: i.lists }, i.probes.min(i.lists))
            }
            _ => {
                return Err(Problem::invalid_spec(
                    "set exactly one of index.hnsw or index.ivfflat",
                ));
            }
        };
        Ok(Self {
            dimensions: e.dimensions,
            model: e.model.clone(),
            metric: e.metric,
            index,
            search_breadth,
            precision: spec.index.precision,
        })
    }

    /// `ALTER TABLE` typing the (still untyped or same-typed) embedding column as vector(N).
    pub fn type_column(&self) -> String {
        format!(
            "ALTER TABLE memories ALTER COLUMN embedding TYPE vector({0}) USING embedding::vector({0})",
            self.dimensions
        )
    }

    /// Storage of the embedding column: `p` (PLAIN, kept in the heap row uncompressed) while a
    /// vector fits comfortably in a page, `e` (EXTERNAL, out of line but never compressed) above
    /// that. The type's default (EXTENDED) TOASTs and tries to compress every 768-d vector
    /// (3 KB > the 2 KB TOAST threshold): wasted CPU on every write and read, since float vectors do
    /// not compress.
    pub fn column_storage(&self) -> char {
        if self.dimensions <= 1536 { 'p' } else { 'e' }
    }

    /// `ALTER TABLE` setting [`Self::column_storage`] (applies to rows written afterwards).
    pub fn set_column_storage(&self) -> String {
        let storage = if self.column_storage() == 'p' {
            "PLAIN"
        } else {
            "EXTERNAL"
        };
        format!("ALTER TABLE memories ALTER COLUMN embedding SET STORAGE {storage}")
    }

    /// Name of the index for this layout: every parameter is in it, so a changed parameter means a
    /// new index (built concurrently) and the old one dropped after.
    pub fn index_name(&self) -> String {
        let metric = metric_tag(self.metric);
        // Float keeps the names earlier versions built, so an upgrade rebuilds nothing.
        let half = match self.precision {
            Precision::Float => "",
            Precision::Half => "_half",
        };
        match self.index {
            IndexKind::Hnsw { m, ef_construction } => {
                format!("{INDEX_PREFIX}hnsw_{metric}_m{m}_efc{ef_construction}{half}")
            }
            IndexKind::IvfFlat { lists } => {
                format!("{INDEX_PREFIX}ivfflat_{metric}_l{lists}{half}")
            }
        }
    }

    /// What the index is built on and searches order by: the column, or its halfvec cast.
    pub fn indexed_expression(&self) -> String {
        indexed_expression(self.precision, self.dimensions)
    }

    /// `CREATE INDEX CONCURRENTLY` for this layout (must run outside a transaction).
    pub fn create_index(&self) -> String {
        let ops = operator_class_for(self.metric, self.precision);
        let name = self.index_name();
        let on = match self.precision {
            Precision::Float => self.indexed_expression(),
            // An expression index takes its expression in parentheses.
            Precision::Half => format!("({})", self.indexed_expression()),
        };
        match self.index {
            IndexKind::Hnsw { m, ef_construction } => format!(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON memories USING hnsw ({on} {ops}) WITH (m = {m}, ef_construction = {ef_construction})"
            ),
            IndexKind::IvfFlat { lists } => format!(
                "CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON memories USING ivfflat ({on} {ops}) WITH (lists = {lists})"
            ),
        }
    }

    pub fn index_kind_name(&self) -> &'static str {
        match self.index {
            IndexKind::Hnsw { .. } => "hnsw",
            IndexKind::IvfFlat { .. } => "ivfflat",
        }
    }
}

/// `DROP INDEX CONCURRENTLY` of an index the operator made. `name` must come from the catalog and
/// carry [`INDEX_PREFIX`]; it is quoted as an identifier.
pub fn drop_index(name: &str) -> Option<String> {
    (name.starts_with(INDEX_PREFIX)
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
    .then(|| format!("DROP INDEX CONCURRENTLY IF EXISTS \"{name}\""))
}

/// The column, or its halfvec cast for a half-precision index; `query` likewise for `$n`.
pub fn indexed_expression(precision: Precision, dimensions: u32) -> String {
    match precision {
        Precision::Float => "embedding".into(),
        Precision::Half => format!("embedding::halfvec({dimensions})"),
    }
}

/// The query parameter `$n` as the index compares it.
pub fn query_expression(precision: Precision, dimensions: u32, n: usize) -> String {
    match precision {
        Precision::Float => format!("${n}"),
        Precision::Half => format!("(${n}::vector)::halfvec({dimensions})"),
    }
}

/// pgvector operator class for a metric and index precision.
pub fn operator_class_for(metric: Metric, precision: Precision) -> &'static str {
    match (precision, metric) {
        (Precision::Float, m) => operator_class(m),
        (Precision::Half, Metric::Cosine) => "halfvec_cosine_ops",
        (Precision::Half, Metric::L2) => "halfvec_l2_ops",
        (Precision::Half, Metric::InnerProduct) => "halfvec_ip_ops",
    }
}

/// pgvector operator class for a metric.
pub fn operator_class(metric: Metric) -> &'static str {
    match metric {
        Metric::Cosine => "vector_cosine_ops",
        Metric::L2 => "vector_l2_ops",
        Metric::InnerProduct => "vector_ip_ops",
    }
}

/// pgvector distance operator for a metric (what the index serves).
pub fn distance_operator(metric: Metric) -> &'static str {
    match metric {
        Metric::Cosine => "<=>",
        Metric::L2 => "<->",
        Metric::InnerProduct => "<#>",
    }
}

/// Short stable name of a metric, as recorded in `aienv_store_config`.
pub fn metric_tag(metric: Metric) -> &'static str {
    match metric {
        Metric::Cosine => "cosine",
        Metric::L2 => "l2",
        Metric::InnerProduct => "ip",
    }
}

pub fn metric_from_tag(tag: &str) -> Option<Metric> {
    match tag {
        "cosine" => Some(Metric::Cosine),
        "l2" => Some(Metric::L2),
        "ip" => Some(Metric::InnerProduct),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::memory_store::{Hnsw, IvfFlat, VectorIndex};

    fn spec(yaml: &str) -> MemoryStoreSpec {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn default_spec_is_768_cosine_hnsw() {
        let l = StoreLayout::from_spec(&spec("mode: managed\n")).unwrap();
        assert_eq!(l.dimensions, 768);
        assert_eq!(
            l.type_column(),
            "ALTER TABLE memories ALTER COLUMN embedding TYPE vector(768) USING embedding::vector(768)"
        );
        assert_eq!(l.index_name(), "memories_embedding_hnsw_cosine_m16_efc64");
        assert_eq!(
            l.create_index(),
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS memories_embedding_hnsw_cosine_m16_efc64 ON memories USING hnsw (embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"
        );
        assert_eq!(l.search_breadth, 100);
    }

    #[test]
    fn vectors_stay_uncompressed_and_inline_while_they_fit() {
        let mut s = spec("mode: managed\n");
        let l = StoreLayout::from_spec(&s).unwrap();
        assert_eq!(
            l.set_column_storage(),
            "ALTER TABLE memories ALTER COLUMN embedding SET STORAGE PLAIN"
        );
        s.embedding.dimensions = 2000;
        assert_eq!(StoreLayout::from_spec(&s).unwrap().column_storage(), 'e');
    }

    #[test]
    fn ivfflat_l2_uses_lists_and_l2_ops() {
        let mut s = spec("mode: managed\nembedding: {dimensions: 3, metric: l2}\n");
        s.index = VectorIndex {
            hnsw: None,
            ivfflat: Some(IvfFlat {
                lists: 50,
                probes: 5,
            }),
            ..Default::default()
        };
        let l = StoreLayout::from_spec(&s).unwrap();
        assert_eq!(
            l.create_index(),
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS memories_embedding_ivfflat_l2_l50 ON memories USING ivfflat (embedding vector_l2_ops) WITH (lists = 50)"
        );
        assert_eq!(l.search_breadth, 5);
    }

    #[test]
    fn inner_product_uses_ip_ops() {
        let l = StoreLayout::from_spec(&spec("mode: managed\nembedding: {metric: innerProduct}\n"))
            .unwrap();
        assert!(l.create_index().contains("vector_ip_ops"));
        assert_eq!(distance_operator(l.metric), "<#>");
    }

    #[test]
    fn out_of_range_numbers_never_reach_sql() {
        let mut s = spec("mode: managed\n");
        s.embedding.dimensions = 4000;
        assert!(StoreLayout::from_spec(&s).is_err());
        let mut s = spec("mode: managed\n");
        s.index.hnsw = Some(Hnsw {
            m: 16,
            ef_construction: 8,
            ef_search: 40,
        });
        assert!(StoreLayout::from_spec(&s).is_err());
        let mut s = spec("mode: managed\n");
        s.index.ivfflat = Some(IvfFlat {
            lists: 1,
            probes: 1,
        });
        assert!(StoreLayout::from_spec(&s).is_err(), "both indexes set");
    }

    #[test]
    fn drop_index_only_for_our_catalog_names() {
        assert_eq!(
            drop_index("memories_embedding_hnsw_cosine_m16_efc64").unwrap(),
            "DROP INDEX CONCURRENTLY IF EXISTS \"memories_embedding_hnsw_cosine_m16_efc64\""
        );
        assert!(drop_index("memories_pkey").is_none());
        assert!(drop_index("memories_embedding_x\"; drop table t; --").is_none());
    }

    #[test]
    fn a_half_precision_index_is_an_expression_index_of_its_own_name() {
        let mut s = spec(
            "mode: external\nembedding: {dimensions: 384}\nindex: {hnsw: {m: 16, efConstruction: 64}, precision: half}\n",
        );
        let half = StoreLayout::from_spec(&s).unwrap();
        assert_eq!(
            half.create_index(),
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS memories_embedding_hnsw_cosine_m16_efc64_half ON memories USING hnsw ((embedding::halfvec(384)) halfvec_cosine_ops) WITH (m = 16, ef_construction = 64)"
        );
        assert_eq!(
            query_expression(half.precision, 384, 1),
            "($1::vector)::halfvec(384)"
        );
        // Float keeps the name and DDL it always had.
        s.index.precision = Precision::Float;
        let float = StoreLayout::from_spec(&s).unwrap();
        assert_eq!(
            float.index_name(),
            "memories_embedding_hnsw_cosine_m16_efc64"
        );
        assert!(
            float
                .create_index()
                .contains("(embedding vector_cosine_ops)")
        );
    }

    #[test]
    fn metric_tags_round_trip() {
        for m in [Metric::Cosine, Metric::L2, Metric::InnerProduct] {
            assert_eq!(metric_from_tag(metric_tag(m)), Some(m));
        }
    }
}
