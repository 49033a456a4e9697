//! Small validated values of the configuration: GUIDs, tenant ids, durations, cron schedules, regular
//! expressions, endpoint URLs and names. Each is parsed once (at load, through serde `try_from`), so the rest
//! of galbridge never re-checks them; the parse error text becomes the `reason` of the load error.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// A directory object id or application (client) id: a GUID, kept in lowercase.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Guid(String);

impl Guid {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Guid {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if is_guid(text) {
            Ok(Self(text.to_ascii_lowercase()))
        } else {
            Err(format!(
                "{text:?} is not a GUID (expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)"
            ))
        }
    }
}

impl TryFrom<String> for Guid {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<Guid> for String {
    fn from(guid: Guid) -> String {
        guid.0
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for Guid {
    fn schema_name() -> Cow<'static, str> {
        "Guid".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A GUID such as 7c9a1f0e-3b2d-4e5f-8a6b-1c2d3e4f5a6b.",
            "pattern": "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
        })
    }
}

/// `8-4-4-4-12` hexadecimal digits.
pub fn is_guid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A tenant: its directory id (GUID) or its initial domain (`contoso.onmicrosoft.com`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TenantId {
    Guid(Guid),
    Domain(String),
}

impl TenantId {
    /// The form used in URLs (`/{tenant}/oauth2/v2.0/token`, `/adminapi/beta/{tenant}/InvokeCommand`).
    pub fn as_str(&self) -> &str {
        match self {
            Self::Guid(guid) => guid.as_str(),
            Self::Domain(domain) => domain,
        }
    }
}

impl FromStr for TenantId {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if let Ok(guid) = text.parse::<Guid>() {
            return Ok(Self::Guid(guid));
        }
        if is_domain_name(text) {
            return Ok(Self::Domain(text.to_ascii_lowercase()));
        }
        Err(format!(
            "{text:?} is neither a tenant GUID nor a domain name (e.g. \"contoso.onmicrosoft.com\")"
        ))
    }
}

impl TryFrom<String> for TenantId {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<TenantId> for String {
    fn from(id: TenantId) -> String {
        id.as_str().to_owned()
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl JsonSchema for TenantId {
    fn schema_name() -> Cow<'static, str> {
        "TenantId".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "The tenant's directory id (a GUID) or its initial domain (contoso.onmicrosoft.com)."
        })
    }
}

/// Two or more dot-separated labels of letters, digits and hyphens.
pub fn is_domain_name(text: &str) -> bool {
    let labels: Vec<&str> = text.split('.').collect();
    labels.len() >= 2
        && text.len() <= 253
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A duration written like `"30s"`, `"15m"`, `"24h"`, `"7d"` or `"1h30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Duration(std::time::Duration);

impl Duration {
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }
    pub fn as_std(&self) -> std::time::Duration {
        self.0
    }
    /// As a chrono duration (saturating; configured durations are far below its range).
    pub fn as_chrono(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.0).unwrap_or(chrono::Duration::MAX)
    }
}

impl FromStr for Duration {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "{text:?} is not a duration (write a number and a unit: \"30s\", \"15m\", \"24h\", \"7d\", \"1h30m\")"
            )
        };
        let mut total: u64 = 0;
        let mut digits = String::new();
        let mut saw_unit = false;
        for ch in text.trim().chars() {
            if ch.is_ascii_digit() {
                digits.push(ch);
                continue;
            }
            let unit_secs = match ch {
                's' => 1,
                'm' => 60,
                'h' => 3_600,
                'd' => 86_400,
                _ => return Err(bad()),
            };
            let amount: u64 = digits.parse().map_err(|_| bad())?;
            total = amount
                .checked_mul(unit_secs)
                .and_then(|secs| total.checked_add(secs))
                .ok_or_else(bad)?;
            digits.clear();
            saw_unit = true;
        }
        if !digits.is_empty() || !saw_unit {
            return Err(bad());
        }
        if total == 0 {
            return Err(format!("{text:?}: a duration must be longer than zero"));
        }
        Ok(Self::from_secs(total))
    }
}

impl TryFrom<String> for Duration {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<Duration> for String {
    fn from(duration: Duration) -> String {
        duration.to_string()
    }
}

impl fmt::Display for Duration {
    /// The shortest exact form: `90s` → `1m30s`, `86400s` → `1d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0.as_secs();
        if rest == 0 {
            return f.write_str("0s");
        }
        for (unit, secs) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
            if rest >= secs {
                write!(f, "{}{unit}", rest / secs)?;
                rest %= secs;
            }
        }
        Ok(())
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A duration: numbers with units s, m, h, d, e.g. \"30s\", \"15m\", \"24h\", \"1h30m\".",
            "pattern": "^([0-9]+[smhd])+$"
        })
    }
}

/// A 6-field cron schedule in UTC (`second minute hour day month weekday`), as Azure Functions writes them.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    text: String,
    cron: croner::Cron,
}

impl CronSchedule {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first occurrence strictly after `after`, if the schedule ever fires again.
    pub fn next_after(
        &self,
        after: chrono::DateTime<chrono::Utc>,
    ) -> Option<chrono::DateTime<chrono::Utc>> {
        self.cron.find_next_occurrence(&after, false).ok()
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl FromStr for CronSchedule {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let fields = text.split_whitespace().count();
        if fields != 6 {
            return Err(format!(
                "{text:?} is not a 6-field cron schedule (second minute hour day month weekday, UTC, e.g. \"0 0 2 * * *\"); it has {fields} fields"
            ));
        }
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Required)
            .year(croner::parser::Year::Disallowed)
            .build();
        let cron = parser
            .parse(text)
            .map_err(|error| format!("{text:?} is not a valid cron schedule: {error}"))?;
        Ok(Self {
            text: text.to_owned(),
            cron,
        })
    }
}

impl<'de> Deserialize<'de> for CronSchedule {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for CronSchedule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl JsonSchema for CronSchedule {
    fn schema_name() -> Cow<'static, str> {
        "CronSchedule".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A 6-field cron schedule in UTC: second minute hour day month weekday, e.g. \"0 0 2 * * *\"."
        })
    }
}

/// A regular expression (Rust `regex` syntax), matched against the whole attribute value only if anchored.
#[derive(Debug, Clone)]
pub struct Pattern(regex::Regex);

impl Pattern {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }
    pub fn regex(&self) -> &regex::Regex {
        &self.0
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        regex::Regex::new(&text).map(Self).map_err(|error| {
            // The regex crate's message spans lines (it draws the pattern); keep the last line, the reason.
            let reason = error.to_string();
            let reason = reason.lines().last().unwrap_or("invalid").trim().to_owned();
            serde::de::Error::custom(format!(
                "{text:?} is not a valid regular expression: {reason}"
            ))
        })
    }
}

impl Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl JsonSchema for Pattern {
    fn schema_name() -> Cow<'static, str> {
        "Pattern".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "regex",
            "description": "A regular expression (Rust regex syntax); anchor it with ^…$ to match the whole value."
        })
    }
}

/// The base URL of a service (login authority, Graph, Exchange, Key Vault, Table Storage).
///
/// Must be `https`, except on a loopback host (`127.0.0.1`, `::1`, `localhost`) where `http` is accepted for
/// local test doubles: a bearer token never travels in clear text beyond this machine. Always ends with `/`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EndpointUrl(url::Url);

impl EndpointUrl {
    pub fn url(&self) -> &url::Url {
        &self.0
    }
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
    /// Whether the host is this machine (used to allow `http`).
    pub fn is_loopback(url: &url::Url) -> bool {
        match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
            None => false,
        }
    }
}

impl FromStr for EndpointUrl {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let mut url =
            url::Url::parse(text).map_err(|error| format!("{text:?} is not a URL: {error}"))?;
        match url.scheme() {
            "https" => {}
            "http" if Self::is_loopback(&url) => {}
            "http" => {
                return Err(format!(
                    "{text:?} must use https (http is only accepted for loopback test doubles)"
                ));
            }
            other => return Err(format!("{text:?} has scheme {other:?}; expected https")),
        }
        if url.host().is_none() {
            return Err(format!("{text:?} has no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("{text:?} must not carry a query or fragment"));
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(Self(url))
    }
}

impl TryFrom<String> for EndpointUrl {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        text.parse()
    }
}

impl From<EndpointUrl> for String {
    fn from(url: EndpointUrl) -> String {
        url.0.into()
    }
}

impl fmt::Display for EndpointUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl JsonSchema for EndpointUrl {
    fn schema_name() -> Cow<'static, str> {
        "EndpointUrl".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "format": "uri",
            "description": "An https base URL (http only for loopback hosts such as 127.0.0.1)."
        })
    }
}

/// Names of links, meshes and tenants: `[a-z0-9][a-z0-9-_.]*` (they appear in URLs: `/api/sync/{link}`).
pub fn is_valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        })
}

/// The closest candidate to a misspelt name, if one is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    wrong: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let limit = (wrong.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .map(|candidate| (strsim::damerau_levenshtein(wrong, candidate), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// `" (did you mean \"x\"?)"` or nothing.
pub fn suggestion_suffix<'a>(wrong: &str, candidates: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(wrong, candidates)
        .map(|name| format!(" (did you mean {name:?}?)"))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print_in_their_shortest_form() {
        assert_eq!("15m".parse::<Duration>().unwrap().as_std().as_secs(), 900);
        assert_eq!(
            "1h30m".parse::<Duration>().unwrap().as_std().as_secs(),
            5_400
        );
        assert_eq!("90s".parse::<Duration>().unwrap().to_string(), "1m30s");
        assert_eq!("24h".parse::<Duration>().unwrap().to_string(), "1d");
        for bad in [
            "",
            "15",
            "m",
            "15 minutes",
            "1.5h",
            "0s",
            "-5m",
            "99999999999999999999d",
        ] {
            assert!(
                bad.parse::<Duration>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn tenant_ids_are_guids_or_domains() {
        assert!(matches!(
            "7C9A1F0E-3B2D-4E5F-8A6B-1C2D3E4F5A6B".parse::<TenantId>().unwrap(),
            TenantId::Guid(g) if g.as_str() == "7c9a1f0e-3b2d-4e5f-8a6b-1c2d3e4f5a6b"
        ));
        assert_eq!(
            "Acme.onmicrosoft.com".parse::<TenantId>().unwrap().as_str(),
            "acme.onmicrosoft.com"
        );
        for bad in [
            "acme",
            "7c9a1f0e-3b2d-4e5f-8a6b",
            "acme..com",
            "-acme.com",
            "a b.com",
        ] {
            assert!(
                bad.parse::<TenantId>().is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn endpoints_require_https_except_on_loopback() {
        assert_eq!(
            "https://127.0.0.1:8443"
                .parse::<EndpointUrl>()
                .unwrap()
                .as_str(),
            "https://127.0.0.1:8443/"
        );
        assert!(
            "http://localhost:10002/devstoreaccount1"
                .parse::<EndpointUrl>()
                .is_ok()
        );
        assert!("http://graph.example.com/".parse::<EndpointUrl>().is_err());
        assert!("ftp://127.0.0.1/".parse::<EndpointUrl>().is_err());
        assert!(
            "https://graph.example.com/?x=1"
                .parse::<EndpointUrl>()
                .is_err()
        );
    }

    #[test]
    fn cron_schedules_have_six_fields() {
        let nightly: CronSchedule = "0 0 2 * * *".parse().unwrap();
        let after = chrono::DateTime::parse_from_rfc3339("2026-01-01T03:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            nightly.next_after(after).unwrap().to_rfc3339(),
            "2026-01-02T02:00:00+00:00"
        );
        assert!("0 2 * * *".parse::<CronSchedule>().is_err());
        assert!("0 0 25 * * *".parse::<CronSchedule>().is_err());
    }

    #[test]
    fn names_and_suggestions() {
        assert!(is_valid_name("acme-to-northern"));
        assert!(is_valid_name("group.acme-to-globex"));
        assert!(!is_valid_name("Acme"));
        assert!(!is_valid_name("-acme"));
        assert!(!is_valid_name("acme/northern"));
        assert_eq!(
            did_you_mean("northen", ["acme", "northern"]),
            Some("northern")
        );
        assert_eq!(did_you_mean("zzz", ["acme", "northern"]), None);
    }
}
