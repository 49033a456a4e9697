//! Mapping from source attributes to the normalised [`Entry`]. The mapping and its templates are the configuration's
//! ([`Mapping`], [`Template`]): parsed once when the file loads, defaults, link overrides and per-object overrides
//! already applied (see `config::template` for the one default table). The engine renders them: it supplies each
//! variable's value (`{sourceTenant}`, or the source object's attribute, a multi-valued one by its first value) and
//! [`Template::render`] applies the rules (values trimmed, punctuation around empty placeholders collapsed). It also
//! works out the Graph attributes a link must `$select` ([`graph_select_for`]).

use super::entry::{Entry, Field, SourceObject};
pub use crate::config::{Mapping, SOURCE_TENANT_VARIABLE, Template};

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
    let variables = mapping
        .iter()
        .flat_map(|(_, template)| template.variables());
    for name in variables.chain(filter_attributes.iter().map(String::as_str)) {
        let top = if name.starts_with("extensionAttribute") {
            "onPremisesExtensionAttributes"
        } else {
            name.split('.').next().unwrap_or(name)
        };
        if top != SOURCE_TENANT_VARIABLE && !select.iter().any(|s| s == top) {
            select.push(top.to_owned());
        }
    }
    select
}

/// Renders one template against a source object: `{sourceTenant}` is the source tenant's configuration name, any
/// other variable the object's attribute ([`SourceObject::text`]: absent renders empty, a list its first value).
pub fn render_template(template: &Template, source: &SourceObject, source_tenant: &str) -> String {
    template.render(|name| {
        if name == SOURCE_TENANT_VARIABLE {
            Some(source_tenant.to_owned())
        } else {
            source.text(name)
        }
    })
}

/// The Graph attributes of a group the engine `$select`s (`groups/delta`, `GET /groups/{id}`): what a group's entry
/// and the group filters need (docs/microsoft-facts.md §10).
pub fn group_select_for(filter_attributes: &[String]) -> Vec<String> {
    let mut select: Vec<String> = ["id", "displayName", "mail", "mailEnabled", "groupTypes"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    for name in filter_attributes {
        if !select.iter().any(|s| s == name) {
            select.push(name.clone());
        }
    }
    select
}

/// The engine's side of the configuration's mapping.
impl Mapping {
    /// Renders the entry of a mail-enabled group: its display name (the mapping's `display_name` template, or the
    /// group's own name when that renders empty, e.g. a people-only template like `{surname}, {givenName}`), its
    /// address (`mail`, whatever the people's `email` template says) and, when the mapping syncs it, the company
    /// (`{sourceTenant}` and constants render as for people; a person's attribute renders empty). Nothing else: a
    /// group has no names, phones or address, and an absent field is left alone in the target.
    pub fn render_group(&self, anchor: &str, source: &SourceObject, source_tenant: &str) -> Entry {
        let mut entry = Entry::new(anchor);
        let display_name = self
            .get(Field::DisplayName)
            .map(|template| render_template(template, source, source_tenant))
            .filter(|name| !name.trim().is_empty())
            .or_else(|| source.text("displayName"))
            .unwrap_or_default();
        entry.set(Field::DisplayName, display_name);
        entry.set(Field::Email, source.text("mail").unwrap_or_default());
        if let Some(template) = self.get(Field::Company) {
            entry.set(
                Field::Company,
                render_template(template, source, source_tenant),
            );
        }
        entry
    }

    /// Renders the entry of a source object: every synced field (blank ones as `""`).
    pub fn render(&self, anchor: &str, source: &SourceObject, source_tenant: &str) -> Entry {
        let mut entry = Entry::new(anchor);
        for (field, template) in self.iter() {
            entry.set(field, render_template(template, source, source_tenant));
        }
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MappingConfig;
    use crate::engine::entry::{Field, SourceKind};
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
        render_template(&Template::parse(template).unwrap(), source, "acme")
    }

    /// The default mapping with a `[links.mapping]` table on top.
    fn overlaid(base: &Mapping, table: &str) -> Result<Mapping, toml::de::Error> {
        Ok(base.overlaid(&toml::from_str::<MappingConfig>(table)?))
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
    fn default_mapping_fills_every_default_field() {
        let mapping = Mapping::defaults();
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
        let link = r#"
            display_name = "{displayName} ({companyName})"
            company = "Acme Construction"
            city = ""
        "#;
        let mapping = overlaid(&Mapping::defaults(), link).unwrap();
        assert!(!mapping.syncs(Field::City));
        let entry = mapping.render("a", &ada(), "acme");
        assert_eq!(entry.get(Field::DisplayName), "Ada Lovelace (Acme)");
        assert_eq!(entry.get(Field::Company), "Acme Construction");
        assert!(!entry.fields.contains_key(&Field::City));

        let object = overlaid(&mapping, r#"display_name = "Countess {surname}""#).unwrap();
        let entry = object.render("a", &ada(), "acme");
        assert_eq!(entry.get(Field::DisplayName), "Countess Lovelace");
        assert_eq!(
            entry.get(Field::Company),
            "Acme Construction",
            "link override kept"
        );

        assert!(overlaid(&Mapping::defaults(), r#"displayname = "x""#).is_err());
    }

    #[test]
    fn a_group_renders_its_name_address_and_the_mappings_company_only() {
        let group = SourceObject::from_graph(
            &json!({"id": "g1", "displayName": "Sales Team", "mail": "sales@acme.com", "mailEnabled": true}),
            SourceKind::Group,
        )
        .unwrap();
        let people = r#"
            display_name = "{surname}, {givenName}"
            email = "{userPrincipalName}"
            company = "Acme ({sourceTenant})"
        "#;
        let mapping = overlaid(&Mapping::defaults(), people).unwrap();
        let entry = mapping.render_group("a", &group, "acme");
        assert_eq!(
            entry.get(Field::DisplayName),
            "Sales Team",
            "a people-only template falls back to the group's name"
        );
        assert_eq!(entry.get(Field::Email), "sales@acme.com");
        assert_eq!(entry.get(Field::Company), "Acme (acme)");
        assert_eq!(entry.fields.len(), 3, "nothing else: {entry:?}");
        let decorated = overlaid(
            &Mapping::defaults(),
            r#"display_name = "{displayName} [{sourceTenant}]""#,
        )
        .unwrap();
        assert_eq!(
            decorated
                .render_group("a", &group, "acme")
                .get(Field::DisplayName),
            "Sales Team [acme]"
        );
        let no_company = overlaid(&Mapping::defaults(), "company = \"\"").unwrap();
        assert!(
            !no_company
                .render_group("a", &group, "acme")
                .fields
                .contains_key(&Field::Company)
        );
    }

    #[test]
    fn blank_templates_stop_syncing_a_field_like_empty_ones() {
        let mapping = overlaid(&Mapping::defaults(), "city = \"  \"\nnotes = \" \"").unwrap();
        assert!(!mapping.syncs(Field::City));
        assert!(!mapping.syncs(Field::Notes));
        let entry = mapping.render("a", &ada(), "acme");
        assert!(!entry.fields.contains_key(&Field::City));
    }

    #[test]
    fn select_covers_mapped_and_filtered_attributes() {
        let mapping = overlaid(
            &Mapping::defaults(),
            r#"notes = "{employeeId} {extensionAttribute2}""#,
        )
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
