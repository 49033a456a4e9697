//! service (placeholder)
