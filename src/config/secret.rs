//! [`Secret`]: a string that never prints. Client secrets, certificates, tokens and connection strings travel in
//! it; `Debug` and `Display` show `[redacted]`, and only [`Secret::expose`] gives the value (grep for it).

use std::fmt;

/// A secret value. Deliberately not `Serialize`: a secret must never end up in a report or a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that must send it (a token request, a signature).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the value is empty (a misconfigured environment variable, an empty Key Vault secret).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print_but_can_be_exposed() {
        let secret = Secret::new("p@ssw0rd-value");
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some([redacted])");
        assert_eq!(secret.expose(), "p@ssw0rd-value");
    }
}
