//! `[service] notifications = { public_url = "https://…/api/notify" }`: near-real-time change notifications from
//! Microsoft Graph (issue 19). Off unless the table is present. Its shape, defaults and the pure checks `validate`
//! runs (docs/microsoft-facts.md §11 for the Graph limits behind them).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::values::{Duration, EndpointUrl};

/// The longest a subscription on `/users` may live: 41,760 minutes (29 days), docs/microsoft-facts.md §11.
pub const USERS_MAX_LIFETIME_SECS: u64 = 41_760 * 60;

/// `[service.notifications]`: Graph change notifications, delivered to the `Notify` function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotificationSettings {
    /// The public address of the `Notify` function, as Graph will call it: `https://{app}.azurewebsites.net/api/notify`.
    /// It must use https (http is only accepted for a loopback test double) and carry no query.
    pub public_url: String,
    /// How long after the first notification of a burst the link runs, so that a burst (a bulk edit, a storm of
    /// notifications) becomes one run. Default "20s".
    #[serde(default = "default_debounce")]
    pub debounce: Duration,
    /// How long each subscription is asked to live; the timer renews it once less than half of this remains.
    /// Default and maximum "29d" (41,760 minutes, Graph's limit for users).
    #[serde(default = "default_lifetime")]
    pub subscription_lifetime: Duration,
}

fn default_debounce() -> Duration {
    Duration::from_secs(20)
}

fn default_lifetime() -> Duration {
    Duration::from_secs(USERS_MAX_LIFETIME_SECS)
}

impl NotificationSettings {
    /// The pure checks: `(key under service.notifications, reason)` for each problem.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        match url::Url::parse(&self.public_url) {
            Err(error) => problems.push((
                "public_url",
                format!("{:?} is not a URL: {error}", self.public_url),
            )),
            Ok(url) => {
                let scheme_ok = url.scheme() == "https"
                    || (url.scheme() == "http" && EndpointUrl::is_loopback(&url));
                if !scheme_ok {
                    problems.push((
                        "public_url",
                        format!(
                            "{:?} must use https: Graph only delivers to https endpoints (http is accepted for a \
                             loopback test double only)",
                            self.public_url
                        ),
                    ));
                }
                if url.query().is_some() || url.fragment().is_some() {
                    problems.push((
                        "public_url",
                        format!(
                            "{:?} must not carry a query or fragment (Graph adds ?validationToken=…)",
                            self.public_url
                        ),
                    ));
                }
            }
        }
        if self.debounce.as_std() > std::time::Duration::from_secs(600) {
            problems.push((
                "debounce",
                "must be at most \"10m\" (a longer wait is what the timer is for)".to_owned(),
            ));
        }
        if self.subscription_lifetime.as_std().as_secs() > USERS_MAX_LIFETIME_SECS {
            problems.push((
                "subscription_lifetime",
                "must be at most \"29d\" (41,760 minutes: Graph's limit for subscriptions on users)".to_owned(),
            ));
        }
        if self.subscription_lifetime.as_std() < std::time::Duration::from_secs(10) {
            problems.push((
                "subscription_lifetime",
                "must be at least \"10s\"".to_owned(),
            ));
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    fn load(notifications: &str) -> Result<Config, String> {
        Config::from_toml_str(
            &format!("[service]\nnotifications = {notifications}\n"),
            Path::new("galbridge.toml"),
        )
        .map_err(|error| error.to_string())
    }

    #[test]
    fn defaults_are_twenty_seconds_and_twenty_nine_days() {
        let config =
            load(r#"{ public_url = "https://app.azurewebsites.net/api/notify" }"#).expect("valid");
        let settings = config.service().notifications.clone().expect("on");
        assert_eq!(settings.debounce.as_std().as_secs(), 20);
        assert_eq!(
            settings.subscription_lifetime.as_std().as_secs(),
            41_760 * 60
        );
        assert!(
            load("{}").is_err(),
            "public_url is required once the table is there"
        );
    }

    #[test]
    fn validate_names_each_bad_key() {
        let error = load(
            r#"{ public_url = "http://app.example/api/notify?x=1", debounce = "11m", subscription_lifetime = "30d" }"#,
        )
        .expect_err("invalid");
        for key in [
            "service.notifications.public_url",
            "must use https",
            "must not carry a query",
            "service.notifications.debounce",
            "service.notifications.subscription_lifetime",
            "41,760 minutes",
        ] {
            assert!(error.contains(key), "{key} in {error}");
        }
        assert!(load(r#"{ public_url = "http://127.0.0.1:7071/api/notify" }"#).is_ok());
    }
}
