//! Mapping templates: the target fields of a normalised entry ([`EntryField`]) with the one default mapping
//! ([`EntryField::default_template`]), the source attributes a template or filter may name ([`SOURCE_ATTRIBUTES`]),
//! and [`Template`] itself (`"{displayName} ({companyName})"`), the one template type of galbridge: parsed once, when
//! the file loads (unknown variables are refused then, with a suggestion), and rendered by the engine
//! (`engine::mapping` supplies the values, [`Template::render`] applies the rules).

use std::borrow::Cow;
use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::names::suggestion_suffix;

/// The variable that names the source tenant (its name in this file), besides the Graph attributes.
pub const SOURCE_TENANT_VARIABLE: &str = "sourceTenant";

/// Graph user attributes that templates and filters may use, as Graph spells them (camelCase).
/// Multi-valued ones (`businessPhones`, `otherMails`, `proxyAddresses`) render their first value.
/// `extensionAttribute1..15` are `onPremisesExtensionAttributes.extensionAttributeN`.
/// The engine `$select`s exactly these (see docs/microsoft-facts.md §2: only selected properties are tracked by delta).
pub const SOURCE_ATTRIBUTES: &[&str] = &[
    "id",
    "displayName",
    "givenName",
    "surname",
    "mail",
    "otherMails",
    "proxyAddresses",
    "userPrincipalName",
    "mailNickname",
    "jobTitle",
    "department",
    "companyName",
    "officeLocation",
    "businessPhones",
    "mobilePhone",
    "faxNumber",
    "streetAddress",
    "city",
    "state",
    "postalCode",
    "country",
    "employeeId",
    "employeeType",
    "userType",
    "accountEnabled",
    "preferredLanguage",
    "usageLocation",
    "extensionAttribute1",
    "extensionAttribute2",
    "extensionAttribute3",
    "extensionAttribute4",
    "extensionAttribute5",
    "extensionAttribute6",
    "extensionAttribute7",
    "extensionAttribute8",
    "extensionAttribute9",
    "extensionAttribute10",
    "extensionAttribute11",
    "extensionAttribute12",
    "extensionAttribute13",
    "extensionAttribute14",
    "extensionAttribute15",
];

/// Whether a template may use `{name}`.
pub fn is_template_variable(name: &str) -> bool {
    name == SOURCE_TENANT_VARIABLE || SOURCE_ATTRIBUTES.contains(&name)
}

fn all_variables() -> impl Iterator<Item = &'static str> {
    SOURCE_ATTRIBUTES
        .iter()
        .copied()
        .chain([SOURCE_TENANT_VARIABLE])
}

/// A field of the normalised person that galbridge writes to targets (the keys of `[links.mapping]`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EntryField {
    GivenName,
    Surname,
    DisplayName,
    Email,
    OtherEmails,
    JobTitle,
    Department,
    Company,
    Office,
    BusinessPhone,
    MobilePhone,
    HomePhone,
    Fax,
    StreetAddress,
    City,
    State,
    PostalCode,
    Country,
    ManagerName,
    Notes,
    Initials,
    WebPage,
}

impl EntryField {
    pub const ALL: [EntryField; 22] = [
        Self::GivenName,
        Self::Surname,
        Self::DisplayName,
        Self::Email,
        Self::OtherEmails,
        Self::JobTitle,
        Self::Department,
        Self::Company,
        Self::Office,
        Self::BusinessPhone,
        Self::MobilePhone,
        Self::HomePhone,
        Self::Fax,
        Self::StreetAddress,
        Self::City,
        Self::State,
        Self::PostalCode,
        Self::Country,
        Self::ManagerName,
        Self::Notes,
        Self::Initials,
        Self::WebPage,
    ];

    /// The snake_case name used in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GivenName => "given_name",
            Self::Surname => "surname",
            Self::DisplayName => "display_name",
            Self::Email => "email",
            Self::OtherEmails => "other_emails",
            Self::JobTitle => "job_title",
            Self::Department => "department",
            Self::Company => "company",
            Self::Office => "office",
            Self::BusinessPhone => "business_phone",
            Self::MobilePhone => "mobile_phone",
            Self::HomePhone => "home_phone",
            Self::Fax => "fax",
            Self::StreetAddress => "street_address",
            Self::City => "city",
            Self::State => "state",
            Self::PostalCode => "postal_code",
            Self::Country => "country",
            Self::ManagerName => "manager_name",
            Self::Notes => "notes",
            Self::Initials => "initials",
            Self::WebPage => "web_page",
        }
    }

    /// Parses a snake_case field name (a `[links.mapping]` key).
    pub fn parse(name: &str) -> Option<EntryField> {
        Self::ALL.into_iter().find(|field| field.as_str() == name)
    }

    /// The template used when the configuration does not map this field (`None`: not synced by default): the one
    /// default mapping, of the configuration and the engine alike.
    ///
    /// `other_emails` is synced by default (`{otherMails}`, rendered as its first value): that is what every link
    /// writes today, because the engine runs the mapping the configuration resolves (an engine table that left it out
    /// served only unit tests). Dropping it would change every person's content hash, so every object would be
    /// rewritten once, and contacts on phones would lose their second address.
    pub fn default_template(self) -> Option<&'static str> {
        Some(match self {
            Self::GivenName => "{givenName}",
            Self::Surname => "{surname}",
            Self::DisplayName => "{displayName}",
            Self::Email => "{mail}",
            Self::OtherEmails => "{otherMails}",
            Self::JobTitle => "{jobTitle}",
            Self::Department => "{department}",
            Self::Company => "{companyName}",
            Self::Office => "{officeLocation}",
            Self::BusinessPhone => "{businessPhones}",
            Self::MobilePhone => "{mobilePhone}",
            Self::Fax => "{faxNumber}",
            Self::StreetAddress => "{streetAddress}",
            Self::City => "{city}",
            Self::State => "{state}",
            Self::PostalCode => "{postalCode}",
            Self::Country => "{country}",
            Self::HomePhone | Self::ManagerName | Self::Notes | Self::Initials | Self::WebPage => {
                return None;
            }
        })
    }
}

impl fmt::Display for EntryField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplatePart {
    Literal(String),
    Variable(String),
}

/// A value template: literal text with `{attribute}` placeholders (`{{` and `}}` write braces).
/// A constant is a template without placeholders; the empty template means "do not sync this field".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Template {
    text: String,
    parts: Vec<TemplatePart>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(ch) = chars.next() {
            match ch {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("template {text:?} has an unclosed '{{'")),
                        }
                    }
                    let name = name.trim().to_owned();
                    if !is_template_variable(&name) {
                        return Err(format!(
                            "unknown template variable {{{name}}}{}",
                            suggestion_suffix(&name, all_variables()).replace('"', "")
                        ));
                    }
                    if !literal.is_empty() {
                        parts.push(TemplatePart::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(TemplatePart::Variable(name));
                }
                '}' => {
                    return Err(format!(
                        "template {text:?} has a '}}' without '{{' (write '}}}}' for a brace)"
                    ));
                }
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            parts.push(TemplatePart::Literal(literal));
        }
        Ok(Self {
            text: text.to_owned(),
            parts,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn parts(&self) -> &[TemplatePart] {
        &self.parts
    }

    /// The empty template, or one of white space only: the field is not synced (the engine has always dropped a
    /// blank template rather than clear the field with it).
    pub fn is_empty(&self) -> bool {
        self.text.trim().is_empty()
    }

    /// The variables it uses, in order.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            TemplatePart::Variable(name) => Some(name.as_str()),
            TemplatePart::Literal(_) => None,
        })
    }

    /// The template is exactly one placeholder (`"{otherMails}"`): list-valued fields can take the whole list.
    pub fn single_variable(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [TemplatePart::Variable(name)] => Some(name),
            _ => None,
        }
    }

    /// Renders with `lookup` giving each variable's value (the engine supplies them: `{sourceTenant}` and the
    /// source object's attributes, a multi-valued one by its first value). Values are trimmed; a missing or blank
    /// value renders as empty, and then the punctuation left around it collapses (`"Ada ()"` → `"Ada"`,
    /// `", Ada"` → `"Ada"`). When no value is empty only the ends are trimmed, so constants are never mangled.
    pub fn render(&self, mut lookup: impl FnMut(&str) -> Option<String>) -> String {
        let mut out = String::new();
        let mut any_empty = false;
        for part in &self.parts {
            match part {
                TemplatePart::Literal(text) => out.push_str(text),
                TemplatePart::Variable(name) => match lookup(name) {
                    Some(value) if !value.trim().is_empty() => out.push_str(value.trim()),
                    _ => any_empty = true,
                },
            }
        }
        if any_empty {
            collapse_empty_placeholders(&out)
        } else {
            out.trim().to_owned()
        }
    }
}

static EMPTY_BRACKETS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\(\s*\)|\[\s*\]|<\s*>|\{\s*\}").expect("static regex compiles"));
static REPEATED_SEPARATORS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"([,;/|·–-])(?:\s*[,;/|·–-])+").expect("static regex compiles"));
static SPACE_BEFORE_COMMA: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\s+([,;])").expect("static regex compiles"));
static WHITESPACE_RUNS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\s{2,}").expect("static regex compiles"));

/// Cleans what empty placeholders leave behind: empty brackets, doubled separators, stray separators at the ends.
fn collapse_empty_placeholders(rendered: &str) -> String {
    let mut text = EMPTY_BRACKETS.replace_all(rendered, "").into_owned();
    text = SPACE_BEFORE_COMMA.replace_all(&text, "$1").into_owned();
    text = REPEATED_SEPARATORS.replace_all(&text, "$1").into_owned();
    text = WHITESPACE_RUNS.replace_all(&text, " ").into_owned();
    text.trim_matches(|c: char| c.is_whitespace() || ",;/|·–-:".contains(c))
        .to_owned()
}

impl TryFrom<String> for Template {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<Template> for String {
    fn from(template: Template) -> String {
        template.text
    }
}

impl JsonSchema for Template {
    fn schema_name() -> Cow<'static, str> {
        "Template".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "Text with {attribute} placeholders naming Graph user attributes (camelCase) or {sourceTenant}; \"\" = do not sync."
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_render_variables_and_literals() {
        let template = Template::parse("{displayName} ({companyName}) {{x}}").unwrap();
        let rendered = template.render(|name| match name {
            "displayName" => Some("Ada Lovelace".into()),
            "companyName" => Some("Acme".into()),
            _ => None,
        });
        assert_eq!(rendered, "Ada Lovelace (Acme) {x}");
        assert_eq!(
            template.variables().collect::<Vec<_>>(),
            ["displayName", "companyName"]
        );
    }

    #[test]
    fn templates_refuse_unknown_variables_with_a_suggestion() {
        let error = Template::parse("{compnyName}").unwrap_err();
        assert_eq!(
            error,
            "unknown template variable {compnyName} (did you mean companyName?)"
        );
        assert!(Template::parse("{displayName").is_err());
        assert!(Template::parse("a}b").is_err());
        assert!(Template::parse("a } b").is_err());
        assert_eq!(
            Template::parse("{displayNmae}").unwrap_err(),
            "unknown template variable {displayNmae} (did you mean displayName?)"
        );
        assert!(Template::parse("{extensionAttribute3}").is_ok());
        assert!(Template::parse("{extensionAttribute16}").is_err());
    }

    #[test]
    fn empty_and_constant_templates() {
        assert!(Template::parse("").unwrap().is_empty());
        let constant = Template::parse("Acme Construction").unwrap();
        assert_eq!(constant.render(|_| None), "Acme Construction");
        assert_eq!(
            Template::parse("{otherMails}").unwrap().single_variable(),
            Some("otherMails")
        );
    }

    #[test]
    fn every_default_template_parses() {
        for field in EntryField::ALL {
            if let Some(text) = field.default_template() {
                assert!(Template::parse(text).is_ok(), "{field}: {text}");
            }
        }
    }
}
