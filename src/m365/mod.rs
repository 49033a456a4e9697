//! m365 (placeholder)
