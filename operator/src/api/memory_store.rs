//! MemoryStore: PostgreSQL + pgvector for agent memory.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Resources, SecretKeyRef};

/// Largest `vector` dimension pgvector can index with hnsw or ivfflat.
pub const MAX_INDEXED_DIMENSIONS: u32 = 2000;

/// PostgreSQL + pgvector database for agent memory: provisioned (managed, or a CloudNativePG Cluster)
/// or external, migrated by the operator, indexed from validated fields, and filled in by embedding
/// workers.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "aienv.orchestr8.io",
    version = "v1alpha1",
    kind = "MemoryStore",
    namespaced,
    shortname = "memstore",
    category = "ai",
    status = "MemoryStoreStatus",
    doc = "MemoryStore is a PostgreSQL + pgvector database for agent memory, with schema, vector index and embedding workers.",
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(
        name = "Dims",
        type_ = "integer",
        json_path = ".spec.embedding.dimensions"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Memories",
        type_ = "integer",
        json_path = ".status.counts.memories",
        priority = 1
    ),
    printcolumn(
        name = "Pending",
        type_ = "integer",
        json_path = ".status.counts.pendingEmbeddings",
        priority = 1
    ),
    printcolumn(
        name = "Failed",
        type_ = "integer",
        json_path = ".status.counts.failedEmbeddings",
        priority = 1
    ),
    printcolumn(
        name = "Workers",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"WorkersReady\")].status",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.mode == 'external' ? has(self.external) : !has(self.external)")
    .message("spec.external (connectionSecretRef) is required with mode: external and not allowed with any other mode"))]
#[x_kube(validation = Rule::new("self.mode == 'cloudnativepg' ? has(self.cloudnativepg) : !has(self.cloudnativepg)")
    .message("spec.cloudnativepg is required with mode: cloudnativepg and not allowed with any other mode"))]
#[x_kube(validation = Rule::new("self.mode == 'managed' || !has(self.managed)")
    .message("spec.managed is only allowed with mode: managed"))]
#[x_kube(validation = Rule::new(MODE_IMMUTABLE_RULE).message(MODE_IMMUTABLE_MESSAGE).field_path(".mode"))]
#[x_kube(validation = Rule::new(SCHEMA_IMMUTABLE_RULE).message(SCHEMA_IMMUTABLE_MESSAGE).field_path(".schema"))]
#[x_kube(validation = Rule::new(SCHEMA_NAME_RULE).message(SCHEMA_NAME_MESSAGE).field_path(".schema"))]
#[x_kube(validation = Rule::new("self.embedding.dimensions <= 2000")
    .message("embedding.dimensions is above 2000: pgvector's hnsw and ivfflat indexes support at most 2000 dimensions for the vector type; choose an embedding model (or a dimensions setting of it) with at most 2000")
    .field_path(".embedding.dimensions"))]
#[serde(rename_all = "camelCase")]
pub struct MemoryStoreSpec {
    /// managed: a single PostgreSQL StatefulSet run by the operator (the embedded default);
    /// external: an existing PostgreSQL; cloudnativepg: a CloudNativePG Cluster for HA.
    /// Immutable: migrate by backup, new store, restore.
    #[serde(default)]
    pub mode: StoreMode,
    /// Settings for mode: managed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedSpec>,
    /// Settings for mode: external.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalSpec>,
    /// Settings for mode: cloudnativepg.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloudnativepg: Option<CloudNativePgSpec>,
    /// PostgreSQL schema holding this store's tables (default `aienv_<name>`, with `-` and `.` as
    /// `_`). Each store has its own, recorded with the store's UID, so stores sharing a database
    /// never share tables and a schema with someone else's tables is refused. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub schema: Option<String>,
    /// The embedding model the vectors come from.
    #[serde(default)]
    pub embedding: Embedding,
    /// The approximate-nearest-neighbour index: hnsw (default) or ivfflat.
    #[serde(default)]
    pub index: VectorIndex,
    /// Embedding workers that fill in missing vectors.
    #[serde(default)]
    pub workers: Workers,
    /// What happens to the data when the MemoryStore is deleted: Retain keeps the PVC and the
    /// database, Delete removes them.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

/// Transition rule: the database of one mode is never exchanged for another's in place.
pub const MODE_IMMUTABLE_RULE: &str = "self.mode == oldSelf.mode";
/// What the user reads when a mode change is rejected.
pub const MODE_IMMUTABLE_MESSAGE: &str = "spec.mode cannot be changed: the store's data lives in the current mode's database. To move it, back this store up (pg_dump or a BackupSchedule), create a new MemoryStore with the new mode, restore the backup into it (aienv restore), then point the AiEnvironments' memory.storeRef at the new store";

/// Transition rule: the schema (where the data is) never changes in place.
pub const SCHEMA_IMMUTABLE_RULE: &str =
    "(has(self.schema) ? self.schema : '') == (has(oldSelf.schema) ? oldSelf.schema : '')";
pub const SCHEMA_IMMUTABLE_MESSAGE: &str = "spec.schema cannot be changed: the store's tables live in it. To move them, back the store up, create a new MemoryStore with the new schema and restore into it";
/// The schema is a plain identifier of the store's own (never `public` or a system schema).
pub const SCHEMA_NAME_RULE: &str = "!has(self.schema) || (self.schema.matches('^[a-z_][a-z0-9_]*$') && self.schema != 'public' && self.schema != 'information_schema' && !self.schema.startsWith('pg_'))";
pub const SCHEMA_NAME_MESSAGE: &str = "spec.schema must be a plain lower-case identifier (a-z, 0-9, _; not starting with a digit), and not public, information_schema or pg_*";

/// Where the database comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum StoreMode {
    #[default]
    Managed,
    External,
    Cloudnativepg,
}

/// A single-instance PostgreSQL run by the operator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ManagedSpec {
    /// PostgreSQL image with pgvector.
    #[serde(default = "default_pg_image")]
    pub image: String,
    /// Persistent volume for the data.
    #[serde(default)]
    pub storage: Storage,
    /// Resources of the PostgreSQL container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

/// The default managed image: PostgreSQL 18 with pgvector 0.8, pinned.
pub fn default_pg_image() -> String {
    "pgvector/pgvector:0.8.1-pg18".to_string()
}

/// A persistent volume request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Requested size, e.g. 10Gi.
    #[serde(default = "default_storage_size")]
    pub size: String,
    /// Storage class; the cluster default when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for Storage {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
        }
    }
}

fn default_storage_size() -> String {
    "10Gi".to_string()
}

/// An existing PostgreSQL.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSpec {
    /// Secret key holding a postgres:// URI (user with rights to create extensions and tables).
    pub connection_secret_ref: SecretKeyRef,
}

/// A CloudNativePG Cluster owned by the MemoryStore.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CloudNativePgSpec {
    /// Number of PostgreSQL instances (1 primary + replicas).
    #[serde(default = "default_instances")]
    #[schemars(range(min = 1, max = 9))]
    pub instances: u32,
    /// Storage of each instance.
    #[serde(default)]
    pub storage: Storage,
    /// PostgreSQL image with pgvector, as CloudNativePG's imageName.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
}

fn default_instances() -> u32 {
    3
}

/// The embedding model and where it is served.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("!has(self.provider) || self.provider.type == 'local' || has(self.provider.url) || has(self.server)")
    .message("embedding.provider.url is required for ollama, openai and tei, unless embedding.server runs the server (the workers then use its Service)"))]
#[x_kube(validation = Rule::new("!has(self.server) || (has(self.provider) && (self.provider.type == 'tei' || self.provider.type == 'ollama'))")
    .message("embedding.server needs embedding.provider of type tei or ollama: it says which server the image is and how the workers speak to it"))]
#[serde(rename_all = "camelCase")]
pub struct Embedding {
    /// Vector dimensions of the model (768 for nomic-embed-text).
    #[serde(default = "default_dimensions")]
    #[schemars(range(min = 1, max = 16000))]
    pub dimensions: u32,
    /// Embedding model name, recorded with every vector.
    #[serde(default = "default_embedding_model")]
    #[schemars(length(min = 1, max = 256))]
    pub model: String,
    /// Distance metric for search and the index operator class.
    #[serde(default)]
    pub metric: Metric,
    /// Where the workers send text to be embedded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<EmbeddingProvider>,
    /// Optional in-cluster embedding server run by the operator (a text-embeddings-inference or
    /// Ollama image, per provider.type), behind the Service `<store>-embed-server`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<EmbeddingServer>,
}

impl Default for Embedding {
    fn default() -> Self {
        Self {
            dimensions: default_dimensions(),
            model: default_embedding_model(),
            metric: Metric::default(),
            provider: None,
            server: None,
        }
    }
}

fn default_dimensions() -> u32 {
    768
}
fn default_embedding_model() -> String {
    "nomic-embed-text".to_string()
}

/// Distance metric.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Metric {
    #[default]
    Cosine,
    L2,
    InnerProduct,
}

/// Where the workers get vectors: an embedding API, or the model run inside the worker.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("self.type != 'local' || !has(self.url)")
    .message("embedding.provider.url must be unset for type local (the model runs inside the worker)"))]
#[x_kube(validation = Rule::new("self.type != 'local' || has(self.modelDirectory) || has(self.modelVolume)")
    .message("embedding.provider type local needs modelDirectory (the model's directory in the worker's image) or modelVolume (a PersistentVolumeClaim holding the model)"))]
#[x_kube(validation = Rule::new("self.type == 'local' || (!has(self.modelDirectory) && !has(self.modelVolume))")
    .message("embedding.provider.modelDirectory and modelVolume are for type local only"))]
#[x_kube(validation = Rule::new("self.type != 'local' || !has(self.secretRef)")
    .message("embedding.provider type local takes no secretRef: nothing is sent anywhere"))]
#[serde(rename_all = "camelCase")]
pub struct EmbeddingProvider {
    /// ollama, openai or tei (Hugging Face text-embeddings-inference) for an API; local for a
    /// sentence-transformers model in safetensors format run inside the worker (no server).
    #[serde(rename = "type")]
    pub type_: EmbeddingProviderType,
    /// Base URL of the embedding API (not for local); with embedding.server, default its
    /// Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048))]
    pub url: Option<String>,
    /// Secret key holding an API key, if the API needs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// local: the model's directory (config.json, model.safetensors, tokenizer.json) — an
    /// absolute path in the worker's image (a derived image), or, with modelVolume, a path
    /// inside that volume (default: its root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("!self.contains('..')")
        .message("embedding.provider.modelDirectory must not contain '..'"))]
    #[schemars(length(min = 1, max = 1024))]
    pub model_directory: Option<String>,
    /// local: a PersistentVolumeClaim holding the model, mounted read-only into the workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_volume: Option<ModelVolume>,
}

/// A PersistentVolumeClaim with an embedding model in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelVolume {
    /// The claim's name, in the store's namespace. ReadOnlyMany lets several workers share it.
    #[schemars(length(min = 1, max = 253))]
    pub claim_name: String,
}

/// Embedding API dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EmbeddingProviderType {
    Ollama,
    Openai,
    Tei,
    /// The model runs inside the worker (candle), from modelDirectory / modelVolume.
    Local,
}

/// An in-cluster embedding server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddingServer {
    /// Server image: text-embeddings-inference for provider.type tei, Ollama for ollama.
    #[schemars(length(min = 1, max = 512))]
    pub image: String,
    /// Model the server loads (a Hugging Face model id for TEI, an Ollama model name); the
    /// store's embedding.model when unset. Downloaded by the server at start unless modelVolume
    /// holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default = "default_one")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// A PersistentVolumeClaim the server keeps its models on (mounted read-write at its model
    /// directory) instead of a pod-local emptyDir: a model pulled once survives restarts, and a
    /// claim filled beforehand serves a cluster that cannot reach a model registry (Ollama pulls
    /// only a model the volume lacks). Several replicas on several nodes need ReadWriteMany.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_volume: Option<ModelVolume>,
}

fn default_one() -> i32 {
    1
}

/// The vector index: exactly one of hnsw or ivfflat.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.hnsw) != has(self.ivfflat)")
    .message("set exactly one of index.hnsw or index.ivfflat"))]
#[serde(rename_all = "camelCase")]
pub struct VectorIndex {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hnsw: Option<Hnsw>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ivfflat: Option<IvfFlat>,
    /// maintenance_work_mem of the session that builds the index (a number with kB, MB or GB).
    /// An HNSW graph that does not fit builds many times slower; the database must have this much
    /// memory to spare while the build runs.
    #[serde(default = "default_maintenance_work_mem")]
    #[x_kube(validation = Rule::new("self.matches('^[0-9]{1,7}(kB|MB|GB)$')")
        .message("index.maintenanceWorkMem must be a size like 256MB (a number with kB, MB or GB)"))]
    pub maintenance_work_mem: String,
    /// What the index holds: float (the column's 32-bit values) or half (16-bit halfvec, an
    /// expression index over the same column): half the index size and faster searches, at a
    /// small loss of recall. The column keeps full precision either way.
    #[serde(default)]
    pub precision: Precision,
}

/// Precision of the vector index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Precision {
    #[default]
    Float,
    Half,
}

impl Default for VectorIndex {
    fn default() -> Self {
        Self {
            hnsw: Some(Hnsw::default()),
            ivfflat: None,
            maintenance_work_mem: default_maintenance_work_mem(),
            precision: Precision::default(),
        }
    }
}

/// Four times PostgreSQL's default: a 100k x 768-d HNSW graph fits.
pub fn default_maintenance_work_mem() -> String {
    "256MB".to_string()
}

/// HNSW index parameters (pgvector).
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("self.efConstruction >= 2 * self.m")
    .message("hnsw.efConstruction must be at least 2 * hnsw.m (pgvector requires it)"))]
#[serde(rename_all = "camelCase")]
pub struct Hnsw {
    /// Max connections per layer (pgvector: 2..100).
    #[serde(default = "default_m")]
    #[schemars(range(min = 2, max = 100))]
    pub m: u32,
    /// Candidate list size while building (pgvector: 4..1000).
    #[serde(default = "default_ef_construction")]
    #[schemars(range(min = 4, max = 1000))]
    pub ef_construction: u32,
    /// Candidate list size at query time (hnsw.ef_search), set by the memory API per session.
    #[serde(default = "default_ef_search")]
    #[schemars(range(min = 1, max = 1000))]
    pub ef_search: u32,
}

impl Default for Hnsw {
    fn default() -> Self {
        Self {
            m: default_m(),
            ef_construction: default_ef_construction(),
            ef_search: default_ef_search(),
        }
    }
}

fn default_m() -> u32 {
    16
}
fn default_ef_construction() -> u32 {
    64
}
fn default_ef_search() -> u32 {
    100
}

/// IVFFlat index parameters (pgvector).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IvfFlat {
    /// Number of inverted lists (pgvector: 1..32768); about rows/1000 up to 1M rows.
    #[schemars(range(min = 1, max = 32768))]
    pub lists: u32,
    /// Lists probed at query time (ivfflat.probes).
    #[serde(default = "default_probes")]
    #[schemars(range(min = 1, max = 32768))]
    pub probes: u32,
}

fn default_probes() -> u32 {
    10
}

/// Embedding workers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Workers {
    #[serde(default = "default_one")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Rows embedded per provider call.
    #[serde(default = "default_batch_size")]
    #[schemars(range(min = 1, max = 2048))]
    pub batch_size: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
}

impl Default for Workers {
    fn default() -> Self {
        Self {
            replicas: default_one(),
            batch_size: default_batch_size(),
            resources: None,
        }
    }
}

fn default_batch_size() -> u32 {
    32
}

/// What happens to the data on deletion.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

/// Observed state of a MemoryStore.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStoreStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// DatabaseReady, SchemaReady, IndexReady, WorkersReady, ReindexRequired, Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// How clients reach the database.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Endpoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pgvector_version: Option<String>,
    /// Highest schema migration applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub counts: Option<Counts>,
}

/// Where the database is.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// The connection Secret (host, port, database, schema, user, password, uri) agents get: the
    /// agents' own role, with DML rights on this store's tables only.
    pub secret_name: String,
    /// The PostgreSQL schema of this store's tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
}

/// Row counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub memories: i64,
    /// Memories without a vector that the workers have yet to embed.
    pub pending_embeddings: i64,
    /// Memories the workers gave up on (the provider rejected their text on every attempt; the
    /// reason is in `memories.embed_error`). Editing the text queues one again.
    #[serde(default)]
    pub failed_embeddings: i64,
}
