//! A string that never prints: client secrets, certificate PEMs, access tokens.
//!
//! `Debug` and `Display` show a fixed placeholder, so a `Secret` can sit inside structs that derive `Debug`, inside
//! error values and tracing fields without leaking. The value is only reachable through [`Secret::expose`], which makes
//! every use greppable. (The foundation room may land a similar type in `src/telemetry.rs`; this one is the clients'.)

use std::fmt;

/// A sensitive string. Cloning is allowed (tokens are handed to concurrent requests); printing is not.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a sensitive value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The sensitive value itself. Call sites should pass it straight to the place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the value is empty (a misconfigured environment variable, an empty Key Vault secret).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Secret::new("p@ssw0rd-value");
        let shown = format!("{secret:?} {secret} {:?}", Some(&secret));
        assert!(!shown.contains("p@ssw0rd"), "{shown}");
        assert_eq!(secret.expose(), "p@ssw0rd-value");
    }
}
