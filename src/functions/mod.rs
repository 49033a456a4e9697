//! functions (placeholder)
