//! The clients' [`Secret`]: the one type of the crate (defined with the configuration), so a secret read from the
//! environment or Key Vault travels to a token request without conversions, and never prints.

pub use crate::config::Secret;
