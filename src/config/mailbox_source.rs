//! `[links.source] kind = "mailbox_folder"`: a mailbox's contact folder as a link's source (an export mailbox that
//! another organisation fills with its address book), its keys' types, their validation, and the resolved
//! [`MailboxFolderSource`] the engine reads. The directory source (`kind = "directory"`, the default) needs none of
//! this. Why and how: docs/architecture.md ("Adding a source or a target"), docs/app-registrations.md.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::link::{MailboxSelection, SourceConfig, TargetConfig};

/// `[links.source] kind`: what a link reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceKindConfig {
    /// The source tenant's directory: its people (and, optionally, its org contacts).
    #[default]
    Directory,
    /// The contacts of one folder (and optionally its subfolders) of one mailbox of the source tenant.
    MailboxFolder,
}

impl SourceKindConfig {
    pub fn is_mailbox_folder(self) -> bool {
        self == SourceKindConfig::MailboxFolder
    }
}

/// `[links.source] sign_in`: how galbridge signs in to the mailbox of a `mailbox_folder` source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MailboxSignIn {
    /// The tenant's app (application permission Contacts.Read, limited to the mailbox by RBAC for Applications).
    #[default]
    App,
    /// The mailbox's own user, signed in once with `galbridge login` (device code); the refresh token is kept in
    /// the file state's folder (file state) or a Key Vault secret (table state) and rotated on every run.
    Delegated,
}

/// A `mailbox_folder` source, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailboxFolderSource {
    /// The mailbox (UPN or SMTP address), as configured.
    pub mailbox: String,
    /// The folder path, one name per level (trimmed, non-empty).
    pub folder: Vec<String>,
    pub include_subfolders: bool,
    pub sign_in: MailboxSignIn,
}

impl MailboxFolderSource {
    /// The source of a link's `[links.source]`, when its kind is `mailbox_folder` (and it validated).
    pub fn from_config(source: &SourceConfig) -> Option<MailboxFolderSource> {
        if source.kind != SourceKindConfig::MailboxFolder {
            return None;
        }
        Some(MailboxFolderSource {
            mailbox: source.mailbox.clone()?.trim().to_owned(),
            folder: folder_path(source.folder.as_deref()?),
            include_subfolders: source.include_subfolders,
            sign_in: source.sign_in.unwrap_or_default(),
        })
    }

    /// The folder path as written (`A/B`).
    pub fn folder_display(&self) -> String {
        self.folder.join("/")
    }
}

/// `"Partners / ACME GAL"` → `["Partners", "ACME GAL"]`.
pub fn folder_path(text: &str) -> Vec<String> {
    text.split('/')
        .map(str::trim)
        .filter(|part| !part.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One problem found by [`check`]: (key under the link, reason).
pub type Problem = (String, String);

/// The cross-checks of a link's source kind against its other keys and its target (docs/architecture.md):
/// `mailbox_folder` needs `mailbox` and `folder`, cannot scope by group or read org contacts, and must not be its
/// own target (a `personal_contacts` target in the same tenant that fills the same folder of the same mailbox would
/// read back what it wrote). `directory` takes none of the mailbox keys. `in_mesh`: a mesh reads directories only.
pub fn check(
    source: &SourceConfig,
    target: &TargetConfig,
    source_tenant: Option<&str>,
    in_mesh: bool,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut add = |key: &str, reason: &str| problems.push((key.to_owned(), reason.to_owned()));
    if source.kind == SourceKindConfig::Directory {
        for (set, key) in [
            (source.mailbox.is_some(), "source.mailbox"),
            (source.folder.is_some(), "source.folder"),
            (source.include_subfolders, "source.include_subfolders"),
            (source.sign_in.is_some(), "source.sign_in"),
        ] {
            if set {
                add(key, "applies to kind = \"mailbox_folder\" only");
            }
        }
        return problems;
    }
    if in_mesh {
        add(
            "source.kind",
            "a mesh reads its tenants' directories; a mailbox folder is read by a link",
        );
    }
    let mailbox = source.mailbox.as_deref().map(str::trim).unwrap_or_default();
    if mailbox.is_empty() {
        add(
            "source.mailbox",
            "kind = \"mailbox_folder\" needs the mailbox (UPN) to read",
        );
    } else if !mailbox.contains('@') {
        add(
            "source.mailbox",
            "must be the mailbox's UPN or SMTP address (name@domain)",
        );
    }
    let folder = source
        .folder
        .as_deref()
        .map(folder_path)
        .unwrap_or_default();
    if folder.is_empty() {
        add(
            "source.folder",
            "kind = \"mailbox_folder\" needs the folder to read (a path, `/` between levels)",
        );
    }
    if !source.groups.is_empty() {
        add(
            "source.groups",
            "a mailbox folder has no group members; scope it with filters or domains",
        );
    }
    if source.include_org_contacts {
        add(
            "source.include_org_contacts",
            "applies to kind = \"directory\" only",
        );
    }
    if source.hidden.is_some() || source.include_hidden.is_some() {
        add(
            "source.hidden",
            "a mailbox folder's contacts are never hidden; remove this key",
        );
    }
    if let TargetConfig::PersonalContacts(target) = target
        && !mailbox.is_empty()
        && !folder.is_empty()
    {
        let same_tenant = target.tenant.as_deref() == source_tenant || target.tenant.is_none();
        let target_folder = target
            .folder
            .as_deref()
            .map(folder_path)
            .unwrap_or_default();
        // The target's folder is a top-level one: only a top-level source folder of the same name is the same.
        let same_folder = target_folder.len() == 1
            && folder.len() == 1
            && folder[0].eq_ignore_ascii_case(&target_folder[0]);
        let excluded = target
            .exclude_mailboxes
            .iter()
            .any(|m| m.trim().eq_ignore_ascii_case(mailbox));
        let selected = match &target.mailboxes {
            MailboxSelection::List(list) => {
                list.iter().any(|m| m.trim().eq_ignore_ascii_case(mailbox))
            }
            _ => true,
        };
        if same_tenant && same_folder && selected && !excluded {
            add(
                "target.mailboxes",
                &format!(
                    "would write into the folder this link reads ({mailbox}, {:?}): the link would read back \
                     what it wrote; add {mailbox} to target.exclude_mailboxes or choose another folder",
                    folder.join("/")
                ),
            );
        }
    }
    problems
}

/// Links of one file that would take each other's contacts for their own: a `mailbox_folder` link and a `directory`
/// link of the same source tenant, writing into the same place (the same tenant's GAL, or the same folder of the
/// same tenant's mailboxes). Both anchors start `galbridge:{tenant}:`, and a full reconcile removes anchored contacts
/// of its source tenant that it does not want. Returns (index of the `mailbox_folder` link, reason).
pub fn check_overlaps(links: &[super::link::LinkConfig]) -> Vec<(usize, String)> {
    let place = |target: &TargetConfig| -> (String, Option<String>) {
        match target {
            TargetConfig::MailContact(options) => {
                (options.tenant.clone().unwrap_or_default(), None)
            }
            TargetConfig::PersonalContacts(options) => (
                options.tenant.clone().unwrap_or_default(),
                Some(
                    options
                        .folder
                        .clone()
                        .unwrap_or_default()
                        .trim()
                        .to_lowercase(),
                ),
            ),
            // Guests live in the tenant's directory, apart from any contact folder.
            TargetConfig::GuestUser(options) => (
                options.tenant.clone().unwrap_or_default(),
                Some("\u{0}guests".to_owned()),
            ),
        }
    };
    let mut problems = Vec::new();
    for (index, link) in links.iter().enumerate() {
        if !link.source.kind.is_mailbox_folder() {
            continue;
        }
        let here = place(&link.target);
        for other in links {
            if !other.source.kind.is_mailbox_folder()
                && other.source.tenant == link.source.tenant
                && place(&other.target) == here
            {
                problems.push((
                    index,
                    format!(
                        "link {:?} reads the same tenant's directory into the same place; their contacts would be \
                         taken for each other's (both anchors start galbridge:{{tenant}}:): give this link another \
                         folder or target",
                        other.name
                    ),
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::link::PersonalContactsTargetConfig;

    fn source(toml_text: &str) -> SourceConfig {
        toml::from_str(toml_text).expect("a source")
    }

    fn phones_target(toml_text: &str) -> TargetConfig {
        let target: PersonalContactsTargetConfig = toml::from_str(toml_text).expect("a target");
        TargetConfig::PersonalContacts(target)
    }

    fn keys(problems: &[Problem]) -> Vec<&str> {
        problems.iter().map(|(key, _)| key.as_str()).collect()
    }

    const FOLDER: &str = r#"kind = "mailbox_folder"
tenant = "acme"
mailbox = "staff-export@acme.com"
folder = " ACME GAL / Sales "
"#;

    #[test]
    fn a_folder_source_needs_its_mailbox_and_folder_and_takes_no_groups() {
        let elsewhere = phones_target(
            "tenant = \"northern\"\nmailboxes = { all = true }\nfolder = \"ACME GAL\"",
        );
        assert!(check(&source(FOLDER), &elsewhere, Some("acme"), false).is_empty());
        let bare = source(
            "kind = \"mailbox_folder\"\ngroups = [\"11111111-1111-4111-8111-111111111111\"]\ninclude_org_contacts = true",
        );
        assert_eq!(
            keys(&check(&bare, &elsewhere, Some("acme"), false)),
            [
                "source.mailbox",
                "source.folder",
                "source.groups",
                "source.include_org_contacts"
            ]
        );
        assert_eq!(
            keys(&check(&source(FOLDER), &elsewhere, None, true)),
            ["source.kind"]
        );
        let directory = source("mailbox = \"x@y.z\"\ninclude_subfolders = true");
        assert_eq!(
            keys(&check(&directory, &elsewhere, Some("acme"), false)),
            ["source.mailbox", "source.include_subfolders"]
        );
        let resolved = MailboxFolderSource::from_config(&source(FOLDER)).expect("resolved");
        assert_eq!(resolved.folder, ["ACME GAL", "Sales"]);
        assert_eq!(resolved.sign_in, MailboxSignIn::App);
    }

    #[test]
    fn a_folder_link_and_a_directory_link_of_one_tenant_may_not_share_a_target() {
        let file = |second_folder: &str| -> Vec<crate::config::LinkConfig> {
            let text = format!(
                "[[links]]\nname = \"direct\"\n[links.source]\ntenant = \"acme\"\n[links.target]\n\
                 kind = \"personal_contacts\"\ntenant = \"northern\"\nmailboxes = {{ all = true }}\nfolder = \"Acme\"\n\
                 [[links]]\nname = \"export\"\n[links.source]\n{TOP_FOLDER}[links.target]\nkind = \"personal_contacts\"\n\
                 tenant = \"northern\"\nmailboxes = {{ all = true }}\nfolder = \"{second_folder}\"\n"
            );
            #[derive(serde::Deserialize)]
            struct Links {
                links: Vec<crate::config::LinkConfig>,
            }
            toml::from_str::<Links>(&text).expect("links").links
        };
        let clash = check_overlaps(&file("acme"));
        assert_eq!(clash.len(), 1, "{clash:?}");
        assert_eq!(clash[0].0, 1);
        assert!(check_overlaps(&file("ACME GAL")).is_empty());
    }

    const TOP_FOLDER: &str = r#"kind = "mailbox_folder"
tenant = "acme"
mailbox = "staff-export@acme.com"
folder = "ACME GAL"
"#;

    #[test]
    fn a_link_may_not_write_into_the_folder_it_reads() {
        let into_itself =
            phones_target("tenant = \"acme\"\nmailboxes = { all = true }\nfolder = \"acme gal\"");
        assert_eq!(
            keys(&check(
                &source(TOP_FOLDER),
                &into_itself,
                Some("acme"),
                false
            )),
            ["target.mailboxes"]
        );
        // Excluding the export mailbox, listing others only, another folder or another tenant are all fine.
        for fine in [
            "tenant = \"acme\"\nmailboxes = { all = true }\nfolder = \"ACME GAL\"\nexclude_mailboxes = [\"Staff-Export@acme.com\"]",
            "tenant = \"acme\"\nmailboxes = { list = [\"ceo@acme.com\"] }\nfolder = \"ACME GAL\"",
            "tenant = \"acme\"\nmailboxes = { all = true }\nfolder = \"Partners\"",
            "tenant = \"northern\"\nmailboxes = { all = true }\nfolder = \"ACME GAL\"",
        ] {
            assert!(
                check(
                    &source(TOP_FOLDER),
                    &phones_target(fine),
                    Some("acme"),
                    false
                )
                .is_empty(),
                "{fine}"
            );
        }
    }
}
