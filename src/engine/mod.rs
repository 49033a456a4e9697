//! engine (placeholder)
