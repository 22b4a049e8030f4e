//! Plain values the memory API takes and returns.

use serde::{Deserialize, Serialize};

/// Kind of a memory (the `memory_type` CHECK constraint).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryType {
    Agent,
    Rag,
    Workflow,
    Insight,
}

impl MemoryType {
    pub fn as_str(self) -> &'static str {
        match self {
            MemoryType::Agent => "agent",
            MemoryType::Rag => "rag",
            MemoryType::Workflow => "workflow",
            MemoryType::Insight => "insight",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "agent" => Some(MemoryType::Agent),
            "rag" => Some(MemoryType::Rag),
            "workflow" => Some(MemoryType::Workflow),
            "insight" => Some(MemoryType::Insight),
            _ => None,
        }
    }
}

/// A memory to store. `embedding: None` leaves the vector NULL for the embedding workers.
#[derive(Clone, Debug, PartialEq)]
pub struct NewMemory {
    pub content: String,
    pub memory_type: MemoryType,
    pub source_system: Option<String>,
    pub agent_id: Option<String>,
    pub session_id: Option<String>,
    pub repo_id: Option<String>,
    pub metadata: serde_json::Value,
    pub embedding: Option<Vec<f32>>,
}

impl NewMemory {
    /// An agent memory with empty metadata and no embedding yet.
    pub fn new(content: impl Into<String>, memory_type: MemoryType) -> Self {
        Self {
            content: content.into(),
            memory_type,
            source_system: None,
            agent_id: None,
            session_id: None,
            repo_id: None,
            metadata: serde_json::json!({}),
            embedding: None,
        }
    }
}

/// Restricts a search to some agent / session / type. Empty filter: everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub agent_id: Option<String>,
    pub session_id: Option<String>,
    pub memory_type: Option<MemoryType>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.agent_id.is_none() && self.session_id.is_none() && self.memory_type.is_none()
    }
}

/// A search result. `score`: distance for vector search (lower is closer), rank for full-text
/// (higher is better), fused RRF score for hybrid (higher is better).
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub id: i64,
    pub content: String,
    pub memory_type: String,
    pub agent_id: Option<String>,
    pub session_id: Option<String>,
    pub metadata: serde_json::Value,
    pub score: f64,
}

/// Who said a conversation turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Assistant,
    System,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::System => "system",
        }
    }
}

/// A conversation turn to append.
#[derive(Clone, Debug, PartialEq)]
pub struct NewTurn {
    pub role: Role,
    pub content: String,
    pub metadata: serde_json::Value,
}

/// A stored conversation turn.
#[derive(Clone, Debug, PartialEq)]
pub struct Turn {
    pub id: i64,
    pub role: String,
    pub content: String,
    pub metadata: serde_json::Value,
    pub created_at: jiff::Timestamp,
}
