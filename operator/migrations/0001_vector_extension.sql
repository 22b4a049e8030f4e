-- pgvector: the vector type, distance operators, hnsw and ivfflat.
CREATE EXTENSION IF NOT EXISTS vector;
