//! Conditions of a MemoryStore, computed from what reconcile found. Pure.

use super::workers::WorkersState;
use crate::{
    conditions::Desired,
    controller::Problem,
    memory::{
        ddl::{StoreLayout, operator_class_for},
        schema::Prepared,
    },
};

pub const DATABASE_READY: &str = "DatabaseReady";
pub const SCHEMA_READY: &str = "SchemaReady";
pub const INDEX_READY: &str = "IndexReady";
pub const REINDEX_REQUIRED: &str = "ReindexRequired";
pub const WORKERS_READY: &str = "WorkersReady";
pub const SERVER_READY: &str = "EmbeddingServerReady";
pub const READY: &str = "Ready";

/// What this reconcile learned about the database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// The spec cannot be used.
    Invalid(Problem),
    /// No usable connection yet (secret missing, CloudNativePG absent, unreachable, …).
    NotConnected(Problem),
    /// Connected, but claiming the schema, migrating, the per-store DDL or the agents' role
    /// failed (`reason` is the memory layer's label).
    SchemaFailed {
        endpoint: String,
        reason: String,
        message: String,
    },
    /// Connected and prepared.
    Prepared {
        endpoint: String,
        prepared: Box<Prepared>,
        layout: StoreLayout,
        index: IndexReport,
    },
}

/// Where the vector index stands, beyond what [`Prepared`] saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexReport {
    Built,
    /// Building in the background; the text says how far.
    Building(String),
    /// The last build failed; retried later.
    Failed(String),
}

fn index_text(layout: &StoreLayout) -> String {
    let ops = operator_class_for(layout.metric, layout.precision);
    let on = match layout.precision {
        crate::api::memory_store::Precision::Float => format!("vector({})", layout.dimensions),
        crate::api::memory_store::Precision::Half => {
            format!("halfvec({}) of the vectors", layout.dimensions)
        }
    };
    match layout.index {
        crate::memory::ddl::IndexKind::Hnsw { m, ef_construction } => {
            format!("hnsw (m={m}, ef_construction={ef_construction}, {ops}) on {on}")
        }
        crate::memory::ddl::IndexKind::IvfFlat { lists } => {
            format!("ivfflat (lists={lists}, {ops}) on {on}")
        }
    }
}

/// `WorkersReady`, or `None` when there is nothing to say (no workers; or not looked at, and the
/// last word stands). The workers do not gate `Ready`: the store takes and serves memories
/// without them, only their vectors wait. A worker's own report of a failing provider (wrong
/// dimensions, unreachable, refused) comes first: it says what to fix, where "0 of 2 available"
/// would only say that something is wrong.
pub fn workers_condition(w: &WorkersState) -> Option<Desired> {
    match w {
        WorkersState::NotObserved | WorkersState::NotConfigured => None,
        WorkersState::Conflict(message) => Some(Desired::false_(
            WORKERS_READY,
            "ChildConflict",
            message.clone(),
        )),
        WorkersState::Scaled { desired: 0, .. } => Some(Desired::false_(
            WORKERS_READY,
            "ScaledToZero",
            "workers.replicas is 0: memories keep embedding = NULL until it is raised",
        )),
        WorkersState::Scaled {
            desired,
            available,
            reports,
        } => {
            let failing: Vec<_> = reports.iter().filter(|r| !r.ok).collect();
            if let Some(first) = failing.first() {
                let more = match failing.len() - 1 {
                    0 => String::new(),
                    n => format!(" (and {n} more failing)"),
                };
                return Some(Desired::false_(
                    WORKERS_READY,
                    condition_reason(first.reason.as_deref()),
                    format!(
                        "worker {}: {}{more}; {available} of {desired} workers available",
                        first.worker,
                        first.message.as_deref().unwrap_or("failing")
                    ),
                ));
            }
            let answered = if reports.is_empty() {
                ""
            } else {
                "; the provider answers"
            };
            if available >= desired {
                Some(Desired::true_(
                    WORKERS_READY,
                    "WorkersAvailable",
                    format!("{available} of {desired} workers available{answered}"),
                ))
            } else {
                Some(Desired::false_(
                    WORKERS_READY,
                    "WorkersUnavailable",
                    format!(
                        "{available} of {desired} workers available{answered} (kubectl describe deployment of component embedding-worker says why)"
                    ),
                ))
            }
        }
    }
}

/// `EmbeddingServerReady`, or `None` without `embedding.server`. Like the workers, it does not
/// gate `Ready`; the workers' own reports say whether the server answers.
pub fn server_condition(s: &WorkersState) -> Option<Desired> {
    match s {
        WorkersState::NotObserved | WorkersState::NotConfigured => None,
        WorkersState::Conflict(message) => Some(Desired::false_(
            SERVER_READY,
            "ChildConflict",
            message.clone(),
        )),
        WorkersState::Scaled { desired: 0, .. } => Some(Desired::false_(
            SERVER_READY,
            "ScaledToZero",
            "embedding.server.replicas is 0: the workers have no server to send text to",
        )),
        WorkersState::Scaled {
            desired, available, ..
        } if available >= desired => Some(Desired::true_(
            SERVER_READY,
            "ServerAvailable",
            format!("{available} of {desired} embedding server replicas available"),
        )),
        WorkersState::Scaled {
            desired, available, ..
        } => Some(Desired::false_(
            SERVER_READY,
            "ServerUnavailable",
            format!(
                "{available} of {desired} embedding server replicas available (kubectl describe deployment of component embedding-server says why: image pull, model download, resources)"
            ),
        )),
    }
}

/// A worker's error label as a condition reason; rows come from the database, so anything that
/// is not a valid reason (another version's label, a hand-made row) reads as WorkerFailing.
fn condition_reason(label: Option<&str>) -> String {
    match label {
        Some(l)
            if l.len() <= 64
                && l.starts_with(|c: char| c.is_ascii_alphabetic())
                && l.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            l.to_string()
        }
        _ => "WorkerFailing".to_string(),
    }
}

/// The conditions for a finding.
pub fn conditions(f: &Finding) -> Vec<Desired> {
    match f {
        Finding::Invalid(Problem { reason, message }) => vec![
            Desired::unknown(DATABASE_READY, *reason, "spec is invalid; not provisioned"),
            Desired::unknown(SCHEMA_READY, *reason, "spec is invalid"),
            Desired::unknown(INDEX_READY, *reason, "spec is invalid"),
            Desired::false_(READY, *reason, message.clone()),
        ],
        Finding::NotConnected(Problem { reason, message }) => vec![
            Desired::false_(DATABASE_READY, *reason, message.clone()),
            Desired::unknown(
                SCHEMA_READY,
                "WaitingForDatabase",
                "waiting for the database",
            ),
            Desired::unknown(
                INDEX_READY,
                "WaitingForDatabase",
                "waiting for the database",
            ),
            Desired::false_(READY, *reason, message.clone()),
        ],
        Finding::SchemaFailed {
            endpoint,
            reason,
            message,
        } => vec![
            Desired::true_(
                DATABASE_READY,
                "Connected",
                format!("connected to {endpoint}"),
            ),
            Desired::false_(SCHEMA_READY, reason.clone(), message.clone()),
            Desired::unknown(INDEX_READY, reason.clone(), "schema is not ready"),
            Desired::false_(READY, reason.clone(), message.clone()),
        ],
        Finding::Prepared {
            endpoint,
            prepared,
            layout,
            index,
        } => {
            let db = Desired::true_(
                DATABASE_READY,
                "Connected",
                format!(
                    "connected to {endpoint} (pgvector {})",
                    prepared.pgvector_version.as_deref().unwrap_or("unknown")
                ),
            );
            let schema = Desired::true_(
                SCHEMA_READY,
                "Migrated",
                format!(
                    "schema {} at version {}",
                    prepared.schema, prepared.schema_version
                ),
            );
            match &prepared.reindex {
                Some(r) => {
                    let msg = r.describe();
                    vec![
                        db,
                        schema,
                        Desired::false_(INDEX_READY, "ReindexRequired", msg.clone()),
                        Desired::true_(REINDEX_REQUIRED, "EmbeddingChanged", msg.clone()),
                        Desired::false_(READY, "ReindexRequired", msg),
                    ]
                }
                None => vec![
                    db,
                    schema,
                    match index {
                        IndexReport::Built => {
                            Desired::true_(INDEX_READY, "IndexBuilt", index_text(layout))
                        }
                        IndexReport::Building(progress) => Desired::false_(
                            INDEX_READY,
                            "IndexBuilding",
                            format!(
                                "building {} in the background: {progress}; searches scan the table meanwhile",
                                index_text(layout)
                            ),
                        ),
                        IndexReport::Failed(message) => Desired::false_(
                            INDEX_READY,
                            "IndexBuildFailed",
                            format!(
                                "building {} failed (retried every minute): {message}",
                                index_text(layout)
                            ),
                        ),
                    },
                    Desired::false_(
                        REINDEX_REQUIRED,
                        "EmbeddingUnchanged",
                        format!(
                            "stored vectors match {} / vector({})",
                            layout.model, layout.dimensions
                        ),
                    ),
                    // Usable while the index builds: reads and writes work, searches scan.
                    Desired::true_(
                        READY,
                        "StoreReady",
                        format!(
                            "{endpoint}: schema {} v{}, {}{}",
                            prepared.schema,
                            prepared.schema_version,
                            index_text(layout),
                            if *index == IndexReport::Built {
                                ""
                            } else {
                                " (not built yet)"
                            }
                        ),
                    ),
                ],
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        api::memory_store::MemoryStoreSpec,
        memory::schema::{IndexState, ReindexNeeded},
    };

    fn layout() -> StoreLayout {
        let spec: MemoryStoreSpec = serde_saphyr::from_str("mode: external\n").unwrap();
        StoreLayout::from_spec(&spec).unwrap()
    }

    fn prepared(reindex: Option<ReindexNeeded>) -> Prepared {
        Prepared {
            schema: "aienv_mem".into(),
            claim: crate::memory::claim::Claim::Owned,
            agent: Default::default(),
            dropped_invalid: None,
            applied: vec![],
            schema_version: 4,
            pgvector_version: Some("0.8.1".into()),
            index: if reindex.is_some() {
                IndexState::Blocked
            } else {
                IndexState::Ready("memories_embedding_hnsw_cosine_m16_efc64".into())
            },
            reindex,
            dropped_indexes: vec![],
        }
    }

    fn get<'a>(c: &'a [Desired], t: &str) -> &'a Desired {
        c.iter().find(|d| d.type_ == t).unwrap()
    }

    #[test]
    fn prepared_store_is_ready() {
        let c = conditions(&Finding::Prepared {
            endpoint: "db:5432/x".into(),
            prepared: Box::new(prepared(None)),
            layout: layout(),
            index: IndexReport::Built,
        });
        assert_eq!(get(&c, READY).status, crate::conditions::Status::True);
        assert_eq!(
            get(&c, REINDEX_REQUIRED).status,
            crate::conditions::Status::False
        );
        assert!(get(&c, INDEX_READY).message.contains("vector_cosine_ops"));
    }

    #[test]
    fn dimension_change_requires_reindex_and_is_not_ready() {
        let c = conditions(&Finding::Prepared {
            endpoint: "db:5432/x".into(),
            prepared: Box::new(prepared(Some(ReindexNeeded {
                stored_dimensions: 768,
                stored_model: "nomic-embed-text".into(),
                wanted_dimensions: 1024,
                wanted_model: "nomic-embed-text".into(),
            }))),
            layout: layout(),
            index: IndexReport::Built,
        });
        assert_eq!(
            get(&c, REINDEX_REQUIRED).status,
            crate::conditions::Status::True
        );
        assert_eq!(get(&c, READY).reason, "ReindexRequired");
        assert!(get(&c, READY).message.contains("768 -> 1024"));
    }

    #[test]
    fn a_building_index_is_reported_and_the_store_stays_usable() {
        let c = conditions(&Finding::Prepared {
            endpoint: "db:5432/x".into(),
            prepared: Box::new(prepared(None)),
            layout: layout(),
            index: IndexReport::Building(
                "building index: loading tuples, 40% (4/10 tuples)".into(),
            ),
        });
        let idx = get(&c, INDEX_READY);
        assert_eq!(idx.reason, "IndexBuilding");
        assert!(idx.message.contains("40%"), "{}", idx.message);
        assert_eq!(get(&c, READY).status, crate::conditions::Status::True);
        assert!(get(&c, READY).message.contains("not built yet"));
    }

    #[test]
    fn a_workers_report_says_what_to_fix_before_availability() {
        use crate::embed::report::WorkerReport;
        let report = |worker: &str, reason: Option<&str>| {
            WorkerReport {
            worker: worker.into(),
            ok: reason.is_none(),
            reason: reason.map(Into::into),
            message: reason.map(|_| "the provider returned 8-dimensional vectors but this store's embedding column is vector(4)".into()),
        }
        };
        let c = workers_condition(&WorkersState::Scaled {
            desired: 2,
            available: 2,
            reports: vec![
                report("w-a", Some("DimensionMismatch")),
                report("w-b", Some("DimensionMismatch")),
            ],
        })
        .unwrap();
        assert_eq!(c.status, crate::conditions::Status::False);
        assert_eq!(c.reason, "DimensionMismatch");
        assert!(
            c.message.starts_with("worker w-a: the provider returned 8"),
            "{}",
            c.message
        );
        assert!(c.message.contains("(and 1 more failing)"), "{}", c.message);
        let c = workers_condition(&WorkersState::Scaled {
            desired: 1,
            available: 1,
            reports: vec![report("w-a", None)],
        })
        .unwrap();
        assert_eq!(c.reason, "WorkersAvailable");
        assert!(c.message.contains("the provider answers"), "{}", c.message);
        // A label that is no condition reason never reaches the API server.
        let c = workers_condition(&WorkersState::Scaled {
            desired: 1,
            available: 0,
            reports: vec![report("w-a", Some("not a reason!"))],
        })
        .unwrap();
        assert_eq!(c.reason, "WorkerFailing");
    }

    #[test]
    fn unreachable_database_says_why() {
        let c = conditions(&Finding::NotConnected(Problem::new(
            "DatabaseUnreachable",
            "cannot reach m.ns.svc:5432/memory",
        )));
        assert_eq!(get(&c, DATABASE_READY).reason, "DatabaseUnreachable");
        assert_eq!(get(&c, READY).status, crate::conditions::Status::False);
    }
}
