//! demo (placeholder)
