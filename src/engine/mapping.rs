//! Mapping from source attributes to the normalised [`Entry`]: templates such as `"{displayName} ({companyName})"`,
//! constants (templates without placeholders) and `""` (= do not sync that field), compiled once per link from the
//! default mapping, the link's overrides and per-object overrides. Also the list of template variables the config
//! room validates against ([`known_variables`]).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;

use super::entry::{Entry, Field, SourceObject};

/// The variable that renders the source tenant's configuration name.
pub const SOURCE_TENANT_VARIABLE: &str = "sourceTenant";

/// Graph attributes that templates may use (user attributes, camelCase as Graph names them), plus `sourceTenant`.
/// `onPremisesExtensionAttributes.extensionAttribute1..15` are accepted too (see [`is_known_variable`]).
pub fn known_variables() -> &'static [&'static str] {
    &[
        "id",
        "displayName",
        "givenName",
        "surname",
        "mail",
        "userPrincipalName",
        "mailNickname",
        "otherMails",
        "proxyAddresses",
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
        "usageLocation",
        "employeeId",
        "employeeType",
        "preferredLanguage",
        "userType",
        "accountEnabled",
        SOURCE_TENANT_VARIABLE,
    ]
}

/// Whether a template variable is known (see [`known_variables`]).
pub fn is_known_variable(name: &str) -> bool {
    if known_variables().contains(&name) {
        return true;
    }
    name.strip_prefix("onPremisesExtensionAttributes.extensionAttribute")
        .and_then(|n| n.parse::<u8>().ok())
        .is_some_and(|n| (1..=15).contains(&n))
}

/// The Graph attributes a link must `$select` to render its mapping and evaluate its scope.
pub fn graph_select_for(mapping: &Mapping, filter_attributes: &[String]) -> Vec<String> {
    let mut select: Vec<String> = [
        "id",
        "displayName",
        "givenName",
        "surname",
        "mail",
        "userPrincipalName",
        "userType",
        "accountEnabled",
        "showInAddressList",
        "onPremisesExtensionAttributes",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let variables = mapping.templates.values().flat_map(Template::variables);
    for name in variables.chain(filter_attributes.iter().map(String::as_str)) {
        let top = name.split('.').next().unwrap_or(name);
        if top != SOURCE_TENANT_VARIABLE && !select.iter().any(|s| s == top) {
            select.push(top.to_owned());
        }
    }
    select
}

/// A mapping or template could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MappingError {
    #[error("unknown field {field:?} (expected one of: {expected})")]
    UnknownField { field: String, expected: String },
    #[error("{field}: unknown template variable {{{variable}}}{}", suggestion.as_ref().map(|s| format!(" (did you mean {{{s}}}?)")).unwrap_or_default())]
    UnknownVariable {
        field: String,
        variable: String,
        suggestion: Option<String>,
    },
    #[error("{field}: unbalanced brace in template {template:?}")]
    UnbalancedBrace { field: String, template: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Variable(String),
}

/// One compiled template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    segments: Vec<Segment>,
}

impl Template {
    /// Compiles a template; `{{` and `}}` are literal braces. `field` only names the template in errors.
    pub fn compile(field: &str, source: &str) -> Result<Template, MappingError> {
        let unbalanced = || MappingError::UnbalancedBrace {
            field: field.to_owned(),
            template: source.to_owned(),
        };
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut chars = source.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
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
                            Some('{') | None => return Err(unbalanced()),
                            Some(c) => name.push(c),
                        }
                    }
                    let name = name.trim().to_owned();
                    if !is_known_variable(&name) {
                        let suggestion = known_variables()
                            .iter()
                            .map(|known| (strsim::jaro_winkler(known, &name), *known))
                            .filter(|(score, _)| *score > 0.8)
                            .max_by(|a, b| a.0.total_cmp(&b.0))
                            .map(|(_, known)| known.to_owned());
                        return Err(MappingError::UnknownVariable {
                            field: field.to_owned(),
                            variable: name,
                            suggestion,
                        });
                    }
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    segments.push(Segment::Variable(name));
                }
                '}' => return Err(unbalanced()),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Template {
            source: source.to_owned(),
            segments,
        })
    }

    /// The template as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The variables the template uses.
    pub fn variables(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|segment| match segment {
            Segment::Variable(name) => Some(name.as_str()),
            Segment::Literal(_) => None,
        })
    }

    /// Renders against a source object. Missing attributes render as empty; when any placeholder rendered empty,
    /// the punctuation left around it collapses (`"Ada ()"` → `"Ada"`, `", Ada"` → `"Ada"`).
    pub fn render(&self, source: &SourceObject, source_tenant: &str) -> String {
        let mut out = String::new();
        let mut any_empty = false;
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Variable(name) => {
                    let value = if name == SOURCE_TENANT_VARIABLE {
                        Some(source_tenant.to_owned())
                    } else {
                        source.text(name)
                    };
                    match value {
                        Some(value) if !value.trim().is_empty() => out.push_str(value.trim()),
                        _ => any_empty = true,
                    }
                }
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

/// A compiled mapping: for each synced field, its template. Fields mapped to `""` are absent (not synced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    templates: BTreeMap<Field, Template>,
}

/// The default template of every field (`""` = not synced unless a link maps it).
pub fn default_templates() -> BTreeMap<Field, &'static str> {
    use Field::*;
    BTreeMap::from([
        (GivenName, "{givenName}"),
        (Surname, "{surname}"),
        (DisplayName, "{displayName}"),
        (Email, "{mail}"),
        (OtherEmails, ""),
        (JobTitle, "{jobTitle}"),
        (Department, "{department}"),
        (Company, "{companyName}"),
        (Office, "{officeLocation}"),
        (BusinessPhone, "{businessPhones}"),
        (MobilePhone, "{mobilePhone}"),
        (HomePhone, ""),
        (Fax, "{faxNumber}"),
        (StreetAddress, "{streetAddress}"),
        (City, "{city}"),
        (State, "{state}"),
        (PostalCode, "{postalCode}"),
        (Country, "{country}"),
        (ManagerName, ""),
        (Notes, ""),
        (Initials, ""),
        (WebPage, ""),
    ])
}

impl Mapping {
    /// The default mapping with a link's overrides (field name → template; `""` stops syncing the field).
    pub fn compile(overrides: &BTreeMap<String, String>) -> Result<Mapping, MappingError> {
        let mut sources: BTreeMap<Field, String> = default_templates()
            .into_iter()
            .map(|(field, template)| (field, template.to_owned()))
            .collect();
        apply_overrides(&mut sources, overrides)?;
        Mapping::from_sources(sources)
    }

    fn from_sources(sources: BTreeMap<Field, String>) -> Result<Mapping, MappingError> {
        let mut templates = BTreeMap::new();
        for (field, source) in sources {
            if source.trim().is_empty() {
                continue;
            }
            templates.insert(field, Template::compile(field.as_str(), &source)?);
        }
        Ok(Mapping { templates })
    }

    /// This mapping with per-object overrides on top.
    pub fn with_overrides(
        &self,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Mapping, MappingError> {
        let mut sources: BTreeMap<Field, String> = Field::ALL
            .into_iter()
            .map(|field| {
                (
                    field,
                    self.templates
                        .get(&field)
                        .map(|t| t.source().to_owned())
                        .unwrap_or_default(),
                )
            })
            .collect();
        apply_overrides(&mut sources, overrides)?;
        Mapping::from_sources(sources)
    }

    /// Whether the field is synced.
    pub fn syncs(&self, field: Field) -> bool {
        self.templates.contains_key(&field)
    }

    /// The template of a synced field.
    pub fn template(&self, field: Field) -> Option<&Template> {
        self.templates.get(&field)
    }

    /// Renders the entry of a source object: every synced field (blank ones as `""`).
    pub fn render(&self, anchor: &str, source: &SourceObject, source_tenant: &str) -> Entry {
        let mut entry = Entry::new(anchor);
        for (field, template) in &self.templates {
            entry.set(*field, template.render(source, source_tenant));
        }
        entry
    }
}

fn apply_overrides(
    sources: &mut BTreeMap<Field, String>,
    overrides: &BTreeMap<String, String>,
) -> Result<(), MappingError> {
    for (key, template) in overrides {
        let field = Field::parse(key).ok_or_else(|| MappingError::UnknownField {
            field: key.clone(),
            expected: Field::ALL
                .iter()
                .map(|f| f.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        })?;
        sources.insert(field, template.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::entry::SourceKind;
    use serde_json::json;

    fn ada() -> SourceObject {
        SourceObject::from_graph(
            &json!({"id": "u1", "displayName": "Ada Lovelace", "givenName": "Ada", "surname": "Lovelace",
                    "mail": "ada@acme.com", "companyName": "Acme", "businessPhones": ["+44 1"], "city": "London"}),
            SourceKind::User,
        )
        .unwrap()
    }

    fn render(template: &str, source: &SourceObject) -> String {
        Template::compile("display_name", template)
            .unwrap()
            .render(source, "acme")
    }

    #[test]
    fn templates_render_variables_and_constants() {
        assert_eq!(
            render("{displayName} ({companyName})", &ada()),
            "Ada Lovelace (Acme)"
        );
        assert_eq!(render("Acme Construction", &ada()), "Acme Construction");
        assert_eq!(render("{surname}, {givenName}", &ada()), "Lovelace, Ada");
        assert_eq!(
            render("{displayName} [{sourceTenant}]", &ada()),
            "Ada Lovelace [acme]"
        );
        assert_eq!(render("{{literal}} {givenName}", &ada()), "{literal} Ada");
    }

    #[test]
    fn empty_placeholders_collapse_their_punctuation() {
        let bare =
            SourceObject::from_graph(&json!({"id": "u2", "displayName": "Ada"}), SourceKind::User)
                .unwrap();
        assert_eq!(render("{displayName} ({companyName})", &bare), "Ada");
        assert_eq!(render("{surname}, {displayName}", &bare), "Ada");
        assert_eq!(
            render("{displayName} - {department} - {city}", &bare),
            "Ada"
        );
        assert_eq!(render("{city}, {department}, {displayName}", &bare), "Ada");
        assert_eq!(render("{companyName}", &bare), "");
        // Constants are never mangled when nothing is empty.
        assert_eq!(render("- Acme -", &bare), "- Acme -");
    }

    #[test]
    fn unknown_variables_and_bad_braces_are_refused() {
        let err = Template::compile("display_name", "{displayNmae}").unwrap_err();
        assert_eq!(
            err,
            MappingError::UnknownVariable {
                field: "display_name".into(),
                variable: "displayNmae".into(),
                suggestion: Some("displayName".into())
            }
        );
        assert!(err.to_string().contains("did you mean {displayName}"));
        assert!(matches!(
            Template::compile("x", "{displayName"),
            Err(MappingError::UnbalancedBrace { .. })
        ));
        assert!(matches!(
            Template::compile("x", "a } b"),
            Err(MappingError::UnbalancedBrace { .. })
        ));
        assert!(
            Template::compile("x", "{onPremisesExtensionAttributes.extensionAttribute3}").is_ok()
        );
        assert!(
            Template::compile("x", "{onPremisesExtensionAttributes.extensionAttribute16}").is_err()
        );
    }

    #[test]
    fn default_mapping_fills_every_default_field() {
        let mapping = Mapping::compile(&BTreeMap::new()).unwrap();
        let entry = mapping.render("galbridge:t:u1", &ada(), "acme");
        assert_eq!(entry.get(Field::DisplayName), "Ada Lovelace");
        assert_eq!(entry.get(Field::Email), "ada@acme.com");
        assert_eq!(entry.get(Field::Company), "Acme");
        assert_eq!(entry.get(Field::BusinessPhone), "+44 1");
        assert_eq!(entry.get(Field::City), "London");
        assert_eq!(
            entry.fields.get(&Field::JobTitle).map(String::as_str),
            Some(""),
            "synced but blank"
        );
        assert!(
            !entry.fields.contains_key(&Field::Notes),
            "not synced by default"
        );
    }

    #[test]
    fn link_and_object_overrides_apply_in_order() {
        let link = BTreeMap::from([
            (
                "display_name".to_owned(),
                "{displayName} ({companyName})".to_owned(),
            ),
            ("company".to_owned(), "Acme Construction".to_owned()),
            ("city".to_owned(), String::new()),
        ]);
        let mapping = Mapping::compile(&link).unwrap();
        assert!(!mapping.syncs(Field::City));
        let entry = mapping.render("a", &ada(), "acme");
        assert_eq!(entry.get(Field::DisplayName), "Ada Lovelace (Acme)");
        assert_eq!(entry.get(Field::Company), "Acme Construction");
        assert!(!entry.fields.contains_key(&Field::City));

        let object = mapping
            .with_overrides(&BTreeMap::from([(
                "display_name".to_owned(),
                "Countess {surname}".to_owned(),
            )]))
            .unwrap();
        let entry = object.render("a", &ada(), "acme");
        assert_eq!(entry.get(Field::DisplayName), "Countess Lovelace");
        assert_eq!(
            entry.get(Field::Company),
            "Acme Construction",
            "link override kept"
        );

        let bad = BTreeMap::from([("displayname".to_owned(), "x".to_owned())]);
        assert!(matches!(
            Mapping::compile(&bad),
            Err(MappingError::UnknownField { .. })
        ));
    }

    #[test]
    fn select_covers_mapped_and_filtered_attributes() {
        let mapping = Mapping::compile(&BTreeMap::from([(
            "notes".to_owned(),
            "{employeeId} {onPremisesExtensionAttributes.extensionAttribute2}".to_owned(),
        )]))
        .unwrap();
        let select = graph_select_for(
            &mapping,
            &["department".to_owned(), "employeeType".to_owned()],
        );
        for needed in [
            "id",
            "mail",
            "companyName",
            "businessPhones",
            "employeeId",
            "department",
            "employeeType",
        ] {
            assert!(
                select.iter().any(|s| s == needed),
                "{needed} missing from {select:?}"
            );
        }
        assert!(!select.iter().any(|s| s == SOURCE_TENANT_VARIABLE));
        assert_eq!(
            select
                .iter()
                .filter(|s| *s == "onPremisesExtensionAttributes")
                .count(),
            1
        );
    }
}
