//! The source scope of a link: which source objects flow to the target. Enabled accounts only (default), members
//! only (guests opt-in), an email address required, include/exclude domains, transitive group membership, attribute
//! filters (equals / starts-with / regex, all must match), explicit excludes, hidden-from-GAL, and org contacts
//! opt-in. Objects carrying a galbridge anchor are never in scope (loop prevention in two-way and mesh sync).
//! Mail-enabled groups (opt-in, `include_groups`) have a scope of their own: mail-enabled with an address, the domain
//! lists, `group_filters`, explicit excludes and hidden-from-GAL; the people-only rules do not apply to them.
//! An object that leaves the scope is treated like a deletion by the diff.
//!
//! Hidden from the address lists means hidden in the source tenant's Exchange (docs/microsoft-facts.md, "Hidden
//! from address lists"): Graph's `showInAddressList` is not kept in step with it. [`read_hidden`] is the one source
//! stage both pipelines (mail contacts and phones) use to learn who is hidden.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use regex::Regex;
use serde::Serialize;
use serde_json::{Value, json};

use super::entry::{SourceKind, SourceObject};
use super::ports::{PortError, SourceDirectory, SourceRead};
use crate::config::{equals_ignoring_case, starts_with_ignoring_case};
use crate::state::LinkCheckpoint;

/// How an attribute filter matches.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// Case-insensitive equality (directory values are case-insensitive), as [`equals_ignoring_case`].
    Equals(String),
    /// Case-insensitive prefix, as [`starts_with_ignoring_case`].
    StartsWith(String),
    /// A regular expression (as written; add `(?i)` for case-insensitivity).
    Matches(Regex),
}

/// One attribute filter: the attribute (Graph name, camelCase) and how it must match.
#[derive(Debug, Clone)]
pub struct AttributeFilter {
    pub attribute: String,
    pub matcher: Matcher,
}

impl AttributeFilter {
    fn accepts(&self, object: &SourceObject) -> bool {
        let value = object.text(&self.attribute).unwrap_or_default();
        match &self.matcher {
            // One case-folding rule with the configuration's filters (Unicode lowercase; see its reasons there).
            Matcher::Equals(expected) => equals_ignoring_case(&value, expected),
            Matcher::StartsWith(prefix) => starts_with_ignoring_case(&value, prefix),
            Matcher::Matches(regex) => regex.is_match(&value),
        }
    }
}

/// Who counts as hidden from the address lists (`[links.source] hidden`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum HiddenRule {
    /// Hidden in the source tenant's Exchange (`HiddenFromAddressListsEnabled`): out of scope.
    #[default]
    Exclude,
    /// Hidden people are synced like everyone else.
    Include,
    /// Graph's `showInAddressList = false` decides (unreliable: usually null for cloud mailboxes; a warning in every
    /// run report).
    Graph,
}

impl HiddenRule {
    /// The configuration's name of the rule.
    pub fn as_str(self) -> &'static str {
        match self {
            HiddenRule::Exclude => "exclude",
            HiddenRule::Include => "include",
            HiddenRule::Graph => "graph",
        }
    }
}

/// What the scope check needs besides the object and the rules: what this run learned from the source tenant.
#[derive(Debug, Clone, Copy)]
pub struct ScopeFacts<'a> {
    /// Transitive member ids (lowercase) of the link's groups (ignored when the link has no groups).
    pub group_members: &'a HashSet<String>,
    /// Ids (lowercase) hidden from the address lists in Exchange (used with [`HiddenRule::Exclude`]).
    pub hidden: &'a HashSet<String>,
}

/// The scope rules of a link (built from the link's `source` configuration).
#[derive(Debug, Clone, Default)]
pub struct ScopeRules {
    pub include_disabled: bool,
    pub include_guests: bool,
    pub include_org_contacts: bool,
    pub hidden: HiddenRule,
    /// Email domains to include (lowercase); empty = all.
    pub include_domains: Vec<String>,
    /// Email domains to exclude (lowercase).
    pub exclude_domains: Vec<String>,
    /// Group object ids; when non-empty, only transitive members of one of them are in scope.
    pub groups: Vec<String>,
    /// Source object ids never synced.
    pub exclude_ids: BTreeSet<String>,
    pub filters: Vec<AttributeFilter>,
    /// Mail-enabled groups are read (`groups/delta`) and may be in scope.
    pub include_groups: bool,
    /// Attribute filters on groups (instead of `filters`).
    pub group_filters: Vec<AttributeFilter>,
}

/// Why an object is out of scope (reported in plans; stable snake_case names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutOfScope {
    Removed,
    Anchored,
    Excluded,
    OrgContact,
    Guest,
    Disabled,
    Hidden,
    NoEmail,
    Domain,
    NotInGroups,
    Filter,
    /// A group, on a link without `include_groups`.
    Group,
}

impl ScopeRules {
    /// The attributes the filters read (to `$select` them).
    pub fn filter_attributes(&self) -> Vec<String> {
        self.filters
            .iter()
            .map(|filter| filter.attribute.clone())
            .collect()
    }

    /// The attributes the group filters read (to `$select` them on groups).
    pub fn group_filter_attributes(&self) -> Vec<String> {
        self.group_filters
            .iter()
            .map(|filter| filter.attribute.clone())
            .collect()
    }

    /// Decides whether a source object is in scope. Hidden is checked last, so `Err(Hidden)` means that only being
    /// hidden keeps the object out.
    pub fn check(&self, object: &SourceObject, facts: &ScopeFacts) -> Result<(), OutOfScope> {
        let group_members = facts.group_members;
        if object.removed.is_some() {
            return Err(OutOfScope::Removed);
        }
        if object.carries_anchor() {
            return Err(OutOfScope::Anchored);
        }
        if self.exclude_ids.contains(&object.id)
            || self.exclude_ids.contains(&object.id.to_ascii_lowercase())
        {
            return Err(OutOfScope::Excluded);
        }
        match object.kind {
            SourceKind::OrgContact if !self.include_org_contacts => {
                return Err(OutOfScope::OrgContact);
            }
            SourceKind::OrgContact => {}
            SourceKind::Group if !self.include_groups => return Err(OutOfScope::Group),
            // docs/microsoft-facts.md §10: groups/delta brings every group; only a mail-enabled one with an address
            // is a recipient another tenant can write to (a security group has no mail).
            SourceKind::Group if object.flag("mailEnabled") != Some(true) => {
                return Err(OutOfScope::NoEmail);
            }
            SourceKind::Group => {}
            SourceKind::User => {
                let guest = object
                    .text("userType")
                    .is_some_and(|t| t.eq_ignore_ascii_case("guest"));
                if guest && !self.include_guests {
                    return Err(OutOfScope::Guest);
                }
                if !self.include_disabled && object.flag("accountEnabled") == Some(false) {
                    return Err(OutOfScope::Disabled);
                }
            }
        }
        let mail = object.text("mail").ok_or(OutOfScope::NoEmail)?;
        let domain = mail
            .rsplit_once('@')
            .map(|(_, domain)| domain.to_ascii_lowercase())
            .ok_or(OutOfScope::NoEmail)?;
        if !self.include_domains.is_empty()
            && !self
                .include_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(&domain))
        {
            return Err(OutOfScope::Domain);
        }
        if self
            .exclude_domains
            .iter()
            .any(|d| d.eq_ignore_ascii_case(&domain))
        {
            return Err(OutOfScope::Domain);
        }
        let is_group = object.kind == SourceKind::Group;
        if !is_group
            && !self.groups.is_empty()
            && !group_members.contains(&object.id)
            && !group_members.contains(&object.id.to_ascii_lowercase())
        {
            return Err(OutOfScope::NotInGroups);
        }
        let filters = if is_group {
            &self.group_filters
        } else {
            &self.filters
        };
        if !filters.iter().all(|filter| filter.accepts(object)) {
            return Err(OutOfScope::Filter);
        }
        let hidden = match self.hidden {
            HiddenRule::Include => false,
            HiddenRule::Graph => object.flag("showInAddressList") == Some(false),
            HiddenRule::Exclude => {
                facts.hidden.contains(&object.id)
                    || facts.hidden.contains(&object.id.to_ascii_lowercase())
            }
        };
        if hidden {
            return Err(OutOfScope::Hidden);
        }
        Ok(())
    }
}

/// The checkpoint entry (`checkpoint.extra`) of the hidden stage: `{"rule", "checked_at", "held"}`.
pub const HIDDEN_STATE_KEY: &str = "hidden_from_address_lists";

/// How far before the last check an incremental run asks Exchange for changed recipients (clock skew between
/// galbridge and Exchange, and Exchange's own replication).
pub const HIDDEN_CHANGE_MARGIN: chrono::Duration = chrono::Duration::minutes(15);

/// Warning of `hidden = "graph"`, in every run report.
pub const HIDDEN_GRAPH_WARNING: &str = "hidden = \"graph\": who is hidden from the address lists is read from \
     Graph's showInAddressList, which Exchange does not keep in step (usually null for cloud mailboxes), so people \
     hidden in Exchange may be synced";

/// What the hidden stage learned in this run.
#[derive(Debug, Clone, Default)]
pub struct HiddenStage {
    /// Ids (lowercase) hidden in Exchange among the people of this run (the scope check's [`ScopeFacts::hidden`]).
    pub hidden: HashSet<String>,
    /// Ids (lowercase) of people who became hidden since the last run and were not read from Graph in this one:
    /// leavers (reason `hidden`).
    pub left: BTreeSet<String>,
    /// Held-out people un-hidden since the last run, read again from Graph and added to the run's read.
    pub returned: usize,
    /// The warning of `hidden = "graph"`.
    pub warning: Option<&'static str>,
    /// The checkpoint entry to store when the run's plan fully applied.
    state: Value,
}

impl HiddenStage {
    /// The warnings every run report of the link repeats.
    pub fn warnings(&self) -> Vec<String> {
        self.warning.iter().map(|w| (*w).to_owned()).collect()
    }

    /// Stores what the next run needs (call only when the run's checkpoint moves forward).
    pub fn commit(&self, checkpoint: &mut LinkCheckpoint) {
        checkpoint
            .extra
            .insert(HIDDEN_STATE_KEY.into(), self.state.clone());
    }
}

/// The hidden stage of a full read, in two steps so the read can be mapped as it arrives (a large tenant is never
/// held whole): [`begin_full_hidden`] asks Exchange for the hidden set before the read (`hidden = "exclude"`), the
/// mapping notes every object only being hidden keeps out ([`FullHidden::note`]), and [`FullHidden::finish`] gives
/// the same [`HiddenStage`] as [`read_hidden`] of a full read.
pub struct FullHidden {
    stage: HiddenStage,
    rule: HiddenRule,
    checked_at: DateTime<Utc>,
    held: BTreeSet<String>,
}

/// Starts the hidden stage of a full read (see [`FullHidden`]); errors as [`read_hidden`]'s.
pub async fn begin_full_hidden(
    rules: &ScopeRules,
    source_tenant: &str,
    source: &dyn SourceDirectory,
) -> Result<FullHidden, PortError> {
    let rule = rules.hidden;
    let mut stage = HiddenStage {
        state: json!({"rule": rule.as_str()}),
        ..HiddenStage::default()
    };
    let checked_at = Utc::now();
    match rule {
        HiddenRule::Include => {}
        HiddenRule::Graph => stage.warning = Some(HIDDEN_GRAPH_WARNING),
        HiddenRule::Exclude => {
            stage.hidden = source
                .hidden_ids()
                .await
                .map_err(|error| match error {
                    PortError::Failed { service, message } => PortError::Failed {
                        service,
                        message: format!("source tenant {source_tenant:?}: {message}"),
                    },
                    other => other,
                })?
                .into_iter()
                .collect();
        }
    }
    Ok(FullHidden {
        stage,
        rule,
        checked_at,
        held: BTreeSet::new(),
    })
}

impl FullHidden {
    /// Who is hidden (the scope check's [`ScopeFacts::hidden`]).
    pub fn hidden(&self) -> &HashSet<String> {
        &self.stage.hidden
    }

    /// Notes an object read in this run and the scope's verdict on it: one only being hidden keeps out is held.
    pub fn note(&mut self, object: &SourceObject, verdict: &Result<(), OutOfScope>) {
        if self.rule == HiddenRule::Exclude && *verdict == Err(OutOfScope::Hidden) {
            self.held.insert(object.id.to_ascii_lowercase());
        }
    }

    /// The stage, as [`read_hidden`] of a full read gives it.
    pub fn finish(self) -> HiddenStage {
        let mut stage = self.stage;
        if self.rule == HiddenRule::Exclude {
            stage.state = json!({
                "rule": self.rule.as_str(),
                "checked_at": self.checked_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                "held": self.held,
            });
        }
        stage
    }
}

/// The stored state of the hidden stage: the rule it ran with, when it last asked Exchange, and who it held out.
struct HiddenState {
    rule: Option<String>,
    checked_at: Option<DateTime<Utc>>,
    held: BTreeSet<String>,
}

fn hidden_state(checkpoint: &LinkCheckpoint) -> HiddenState {
    let stored = checkpoint.extra.get(HIDDEN_STATE_KEY);
    let text = |key: &str| {
        stored
            .and_then(|state| state.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    HiddenState {
        rule: text("rule"),
        checked_at: text("checked_at")
            .and_then(|at| DateTime::parse_from_rfc3339(&at).ok())
            .map(|at| at.with_timezone(&Utc)),
        held: stored
            .and_then(|state| state.get("held"))
            .and_then(Value::as_array)
            .map(|ids| {
                ids.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Whether the hidden stage needs a full read: excluding hidden people without a stored check (first run, or a
/// checkpoint from before this stage: hidden people may have leaked), or a rule changed since the last run.
pub fn hidden_needs_full(rules: &ScopeRules, checkpoint: &LinkCheckpoint) -> bool {
    let state = hidden_state(checkpoint);
    match rules.hidden {
        HiddenRule::Exclude => {
            state.rule.as_deref() != Some(HiddenRule::Exclude.as_str())
                || state.checked_at.is_none()
        }
        rule => state.rule.is_some_and(|stored| stored != rule.as_str()),
    }
}

/// What the hidden stage needs to know of the run: the link's rules and source tenant (its configuration name, for
/// errors), the checkpoint, whether the run reads in full, the Graph `$select` (to read people shown again) and the
/// group members of the scope.
#[derive(Clone, Copy)]
pub struct HiddenRun<'a> {
    pub rules: &'a ScopeRules,
    pub source_tenant: &'a str,
    pub checkpoint: &'a LinkCheckpoint,
    pub full: bool,
    pub select: &'a [String],
    pub group_members: &'a HashSet<String>,
}

/// The hidden stage of a run's source side, shared by the mail-contact and phones pipelines.
///
/// `hidden = "exclude"`: a full run reads the hidden set once (`Get-Recipient -Filter "HiddenFromAddressListsEnabled
/// -eq $true"`); an incremental run sends one `Get-Recipient` asking for the recipients changed since the last check
/// (minus [`HIDDEN_CHANGE_MARGIN`]) and for the people and groups Graph's delta brought (batched by 50), so people
/// hidden or un-hidden since the last run are noticed although Graph's delta does not show it. Newly hidden people not
/// in the read become leavers ([`HiddenStage::left`]); held-out people now shown are read from Graph
/// (`GET /users/{id}`, or `GET /groups/{id}` for a group) and added to `read`. `"include"` and `"graph"` ask
/// Exchange nothing. A refused Exchange read fails the stage with an error naming `source_tenant` and what to grant:
/// hidden people are never included silently.
pub async fn read_hidden(
    run: HiddenRun<'_>,
    source: &dyn SourceDirectory,
    read: &mut SourceRead,
) -> Result<HiddenStage, PortError> {
    let HiddenRun {
        rules,
        source_tenant,
        checkpoint,
        full,
        select,
        group_members,
    } = run;
    let rule = rules.hidden;
    let mut stage = HiddenStage {
        state: json!({"rule": rule.as_str()}),
        ..HiddenStage::default()
    };
    match rule {
        HiddenRule::Include => return Ok(stage),
        HiddenRule::Graph => {
            stage.warning = Some(HIDDEN_GRAPH_WARNING);
            return Ok(stage);
        }
        HiddenRule::Exclude => {}
    }
    let named = |error: PortError| match error {
        PortError::Failed { service, message } => PortError::Failed {
            service,
            message: format!("source tenant {source_tenant:?}: {message}"),
        },
        other => other,
    };
    let checked_at = Utc::now();
    let previous = hidden_state(checkpoint);
    let mut held: BTreeSet<String>;
    match previous.checked_at.filter(|_| !full) {
        None => {
            stage.hidden = source
                .hidden_ids()
                .await
                .map_err(named)?
                .into_iter()
                .collect();
            held = BTreeSet::new();
        }
        Some(last) => {
            let read_ids: Vec<String> = read
                .objects
                .iter()
                .filter(|object| {
                    object.removed.is_none()
                        && matches!(object.kind, SourceKind::User | SourceKind::Group)
                })
                .map(|object| object.id.to_ascii_lowercase())
                .collect();
            let flags: BTreeMap<String, bool> = source
                .hidden_flags(Some(last - HIDDEN_CHANGE_MARGIN), &read_ids)
                .await
                .map_err(named)?;
            let in_read: HashSet<String> = read
                .objects
                .iter()
                .map(|object| object.id.to_ascii_lowercase())
                .collect();
            held = previous.held;
            // Leavers of Graph (deleted) need no holding any more.
            for object in read.objects.iter().filter(|o| o.removed.is_some()) {
                held.remove(&object.id.to_ascii_lowercase());
            }
            let mut returned = Vec::new();
            for (id, hidden) in flags {
                if hidden {
                    if !in_read.contains(&id) {
                        // Hidden since the last run: a leaver, held out until un-hidden.
                        stage.left.insert(id.clone());
                        held.insert(id.clone());
                    }
                    stage.hidden.insert(id);
                } else if held.remove(&id) && !in_read.contains(&id) {
                    returned.push(id);
                }
            }
            for id in returned {
                let mut object = source.read_user(&id, select).await?;
                // A group shown again (docs/microsoft-facts.md §10): not a user, so read as a group.
                if object.is_none() && rules.include_groups {
                    let group_select =
                        super::mapping::group_select_for(&rules.group_filter_attributes());
                    object = source.read_group(&id, &group_select).await?;
                }
                if let Some(object) = object {
                    read.objects.push(object);
                    stage.returned += 1;
                }
            }
        }
    }
    // Held out: people read in this run whom only being hidden keeps out (so their un-hiding is noticed).
    let facts = ScopeFacts {
        group_members,
        hidden: &stage.hidden,
    };
    for object in &read.objects {
        if rules.check(object, &facts) == Err(OutOfScope::Hidden) {
            held.insert(object.id.to_ascii_lowercase());
        }
    }
    stage.state = json!({
        "rule": rule.as_str(),
        "checked_at": checked_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "held": held,
    });
    Ok(stage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(extra: serde_json::Value) -> SourceObject {
        let mut base = json!({"id": "u1", "mail": "ada@acme.com", "accountEnabled": true, "userType": "Member",
                               "department": "Sales"});
        for (key, value) in extra.as_object().unwrap() {
            base[key] = value.clone();
        }
        SourceObject::from_graph(&base, SourceKind::User).unwrap()
    }

    static EMPTY: std::sync::LazyLock<HashSet<String>> = std::sync::LazyLock::new(HashSet::new);

    fn none() -> ScopeFacts<'static> {
        ScopeFacts {
            group_members: &EMPTY,
            hidden: &EMPTY,
        }
    }

    #[test]
    fn default_scope_takes_enabled_members_with_mail() {
        let rules = ScopeRules::default();
        assert_eq!(rules.check(&user(json!({})), &none()), Ok(()));
        assert_eq!(
            rules.check(&user(json!({"accountEnabled": false})), &none()),
            Err(OutOfScope::Disabled)
        );
        assert_eq!(
            rules.check(&user(json!({"userType": "Guest"})), &none()),
            Err(OutOfScope::Guest)
        );
        assert_eq!(
            rules.check(&user(json!({"mail": null})), &none()),
            Err(OutOfScope::NoEmail)
        );
        // Graph's flag is not the truth (docs/microsoft-facts.md, "Hidden from address lists"): Exchange's is.
        assert_eq!(
            rules.check(&user(json!({"showInAddressList": false})), &none()),
            Ok(())
        );
        let hidden = HashSet::from(["u1".to_owned()]);
        let facts = ScopeFacts {
            hidden: &hidden,
            ..none()
        };
        assert_eq!(
            rules.check(&user(json!({})), &facts),
            Err(OutOfScope::Hidden)
        );
        // Hidden is checked last: another reason wins, so `Hidden` means "only hidden keeps it out".
        assert_eq!(
            rules.check(&user(json!({"accountEnabled": false})), &facts),
            Err(OutOfScope::Disabled)
        );
        let graph = ScopeRules {
            hidden: HiddenRule::Graph,
            ..ScopeRules::default()
        };
        assert_eq!(
            graph.check(&user(json!({"showInAddressList": false})), &none()),
            Err(OutOfScope::Hidden)
        );
        assert_eq!(graph.check(&user(json!({})), &facts), Ok(()));
        let contact = SourceObject::from_graph(
            &json!({"id": "c1", "mail": "x@y.com"}),
            SourceKind::OrgContact,
        )
        .unwrap();
        assert_eq!(rules.check(&contact, &none()), Err(OutOfScope::OrgContact));
    }

    #[test]
    fn opt_ins_widen_the_scope() {
        let rules = ScopeRules {
            include_disabled: true,
            include_guests: true,
            hidden: HiddenRule::Include,
            include_org_contacts: true,
            ..ScopeRules::default()
        };
        let hidden = HashSet::from(["u1".to_owned()]);
        assert_eq!(
            rules.check(&user(json!({"accountEnabled": false})), &none()),
            Ok(())
        );
        assert_eq!(
            rules.check(&user(json!({"userType": "Guest"})), &none()),
            Ok(())
        );
        assert_eq!(
            rules.check(
                &user(json!({"showInAddressList": false})),
                &ScopeFacts {
                    hidden: &hidden,
                    ..none()
                }
            ),
            Ok(())
        );
        let contact = SourceObject::from_graph(
            &json!({"id": "c1", "mail": "x@y.com"}),
            SourceKind::OrgContact,
        )
        .unwrap();
        assert_eq!(rules.check(&contact, &none()), Ok(()));
    }

    #[test]
    fn anchored_objects_never_flow_out_even_when_everything_is_included() {
        let rules = ScopeRules {
            include_org_contacts: true,
            ..ScopeRules::default()
        };
        let synced = SourceObject::from_graph(
            &json!({"id": "c9", "mail": "bob@northern.com",
                    "onPremisesExtensionAttributes": {"extensionAttribute15": "galbridge:northern-id:u7"}}),
            SourceKind::OrgContact,
        )
        .unwrap();
        assert_eq!(rules.check(&synced, &none()), Err(OutOfScope::Anchored));
    }

    #[test]
    fn domains_groups_excludes_and_filters() {
        let rules = ScopeRules {
            include_domains: vec!["acme.com".into()],
            ..ScopeRules::default()
        };
        assert_eq!(
            rules.check(&user(json!({"mail": "ADA@ACME.COM"})), &none()),
            Ok(())
        );
        assert_eq!(
            rules.check(&user(json!({"mail": "ada@other.com"})), &none()),
            Err(OutOfScope::Domain)
        );
        let rules = ScopeRules {
            exclude_domains: vec!["acme.com".into()],
            ..ScopeRules::default()
        };
        assert_eq!(
            rules.check(&user(json!({})), &none()),
            Err(OutOfScope::Domain)
        );

        let rules = ScopeRules {
            groups: vec!["g1".into()],
            ..ScopeRules::default()
        };
        assert_eq!(
            rules.check(&user(json!({})), &none()),
            Err(OutOfScope::NotInGroups)
        );
        assert_eq!(
            rules.check(
                &user(json!({})),
                &ScopeFacts {
                    group_members: &HashSet::from(["u1".to_owned()]),
                    ..none()
                }
            ),
            Ok(())
        );

        let rules = ScopeRules {
            exclude_ids: BTreeSet::from(["u1".to_owned()]),
            ..ScopeRules::default()
        };
        assert_eq!(
            rules.check(&user(json!({})), &none()),
            Err(OutOfScope::Excluded)
        );

        let filters = |matcher| ScopeRules {
            filters: vec![AttributeFilter {
                attribute: "department".into(),
                matcher,
            }],
            ..ScopeRules::default()
        };
        assert_eq!(
            filters(Matcher::Equals("sales".into())).check(&user(json!({})), &none()),
            Ok(())
        );
        assert_eq!(
            filters(Matcher::Equals("Sale".into())).check(&user(json!({})), &none()),
            Err(OutOfScope::Filter)
        );
        assert_eq!(
            filters(Matcher::StartsWith("SA".into())).check(&user(json!({})), &none()),
            Ok(())
        );
        let regex = Regex::new("^(Sales|Marketing)$").unwrap();
        assert_eq!(
            filters(Matcher::Matches(regex.clone())).check(&user(json!({})), &none()),
            Ok(())
        );
        assert_eq!(
            filters(Matcher::Matches(regex)).check(&user(json!({"department": "Legal"})), &none()),
            Err(OutOfScope::Filter)
        );
        // A missing attribute never equals a non-empty value.
        assert_eq!(
            filters(Matcher::Equals("Sales".into()))
                .check(&user(json!({"department": null})), &none()),
            Err(OutOfScope::Filter)
        );
    }

    #[test]
    fn groups_have_a_scope_of_their_own() {
        let group = |extra: serde_json::Value| {
            let mut base = json!({"id": "g1", "displayName": "Sales Team", "mail": "sales@acme.com",
                                  "mailEnabled": true, "groupTypes": ["Unified"]});
            for (key, value) in extra.as_object().unwrap() {
                base[key] = value.clone();
            }
            SourceObject::from_graph(&base, SourceKind::Group).unwrap()
        };
        assert_eq!(
            ScopeRules::default().check(&group(json!({})), &none()),
            Err(OutOfScope::Group),
            "groups are opt-in"
        );
        let rules = ScopeRules {
            include_groups: true,
            groups: vec!["scoping".into()],
            filters: vec![AttributeFilter {
                attribute: "department".into(),
                matcher: Matcher::Equals("Sales".into()),
            }],
            group_filters: vec![AttributeFilter {
                attribute: "displayName".into(),
                matcher: Matcher::StartsWith("sales".into()),
            }],
            ..ScopeRules::default()
        };
        // People's membership scoping and filters do not apply to groups; group_filters do.
        assert_eq!(rules.check(&group(json!({})), &none()), Ok(()));
        assert_eq!(
            rules.check(&group(json!({"displayName": "Legal"})), &none()),
            Err(OutOfScope::Filter)
        );
        assert_eq!(
            rules.check(&group(json!({"mailEnabled": false})), &none()),
            Err(OutOfScope::NoEmail),
            "a group with an address but not mail-enabled is no recipient"
        );
        assert_eq!(
            rules.check(&group(json!({"mail": null})), &none()),
            Err(OutOfScope::NoEmail)
        );
        let hidden = HashSet::from(["g1".to_owned()]);
        let facts = ScopeFacts {
            hidden: &hidden,
            ..none()
        };
        assert_eq!(
            rules.check(&group(json!({})), &facts),
            Err(OutOfScope::Hidden)
        );
        let excluded = ScopeRules {
            exclude_ids: BTreeSet::from(["g1".to_owned()]),
            ..rules.clone()
        };
        assert_eq!(
            excluded.check(&group(json!({})), &none()),
            Err(OutOfScope::Excluded)
        );
        let domains = ScopeRules {
            exclude_domains: vec!["acme.com".into()],
            ..rules
        };
        assert_eq!(
            domains.check(&group(json!({})), &none()),
            Err(OutOfScope::Domain)
        );
    }

    #[test]
    fn filters_ignore_case_beyond_ascii() {
        let rules = |matcher| ScopeRules {
            filters: vec![AttributeFilter {
                attribute: "department".into(),
                matcher,
            }],
            ..ScopeRules::default()
        };
        let equipe = user(json!({"department": "Équipe Île-de-France"}));
        assert_eq!(
            rules(Matcher::Equals("équipe île-de-france".into())).check(&equipe, &none()),
            Ok(())
        );
        assert_eq!(
            rules(Matcher::StartsWith("ÉQUIPE".into())).check(&equipe, &none()),
            Ok(())
        );
    }

    mod hidden_stage {
        use super::*;
        use crate::engine::testing::FakeDirectory;

        fn person(id: &str) -> serde_json::Value {
            json!({"id": id, "mail": format!("{id}@acme.com"), "accountEnabled": true, "userType": "Member"})
        }

        fn directory() -> FakeDirectory {
            let directory = FakeDirectory::new("t1");
            for id in ["u1", "u2", "u3", "u4"] {
                directory.put_user(person(id));
            }
            directory.put_user(
                json!({"id": "off", "mail": "off@acme.com", "accountEnabled": false,
                                      "userType": "Member"}),
            );
            directory
        }

        async fn stage(
            rules: &ScopeRules,
            directory: &FakeDirectory,
            checkpoint: &LinkCheckpoint,
            full: bool,
            read: &mut SourceRead,
        ) -> Result<HiddenStage, PortError> {
            let run = HiddenRun {
                rules,
                source_tenant: "acme",
                checkpoint,
                full,
                select: &[],
                group_members: &EMPTY,
            };
            read_hidden(run, directory, read).await
        }

        #[tokio::test]
        async fn a_full_run_reads_the_hidden_set_once_and_holds_out_who_only_hiding_keeps_out() {
            let directory = directory();
            directory.set_hidden("u2", true);
            directory.set_hidden("off", true);
            let rules = ScopeRules::default();
            let mut checkpoint = LinkCheckpoint::default();
            assert!(
                hidden_needs_full(&rules, &checkpoint),
                "no stored check yet"
            );
            let mut read = directory.read_users(None, &[]).await.unwrap();
            let hidden = stage(&rules, &directory, &checkpoint, true, &mut read)
                .await
                .unwrap();
            assert_eq!(directory.hidden_reads(), 1);
            assert!(hidden.hidden.contains("u2") && hidden.hidden.contains("off"));
            assert!(hidden.left.is_empty());
            hidden.commit(&mut checkpoint);
            let state = &checkpoint.extra[HIDDEN_STATE_KEY];
            assert_eq!(state["rule"], "exclude");
            // "off" is disabled as well: only "u2" is held out for being hidden.
            assert_eq!(state["held"], json!(["u2"]));
            assert!(!hidden_needs_full(&rules, &checkpoint));
        }

        #[tokio::test]
        async fn an_incremental_run_asks_once_and_sees_who_was_hidden_or_shown_since() {
            let directory = directory();
            directory.set_hidden("u2", true);
            let rules = ScopeRules::default();
            let mut checkpoint = LinkCheckpoint::default();
            let mut read = directory.read_users(None, &[]).await.unwrap();
            stage(&rules, &directory, &checkpoint, true, &mut read)
                .await
                .unwrap()
                .commit(&mut checkpoint);
            let delta = read.delta_link.clone();

            // u1 hidden, u2 shown (neither is a Graph change), u3 changed in Graph.
            directory.set_hidden("u1", true);
            directory.set_hidden("u2", false);
            directory.set("u3", "jobTitle", json!("Chief"));
            let before = directory.hidden_reads();
            let mut read = directory.read_users(Some(&delta), &[]).await.unwrap();
            assert_eq!(read.objects.len(), 1, "Graph's delta only brings u3");
            let hidden = stage(&rules, &directory, &checkpoint, false, &mut read)
                .await
                .unwrap();
            assert_eq!(directory.hidden_reads() - before, 1, "one Exchange read");
            assert_eq!(hidden.left, BTreeSet::from(["u1".to_owned()]));
            assert_eq!(hidden.returned, 1);
            let ids: BTreeSet<&str> = read.objects.iter().map(|o| o.id.as_str()).collect();
            assert_eq!(
                ids,
                BTreeSet::from(["u2", "u3"]),
                "u2 is read back from Graph"
            );
            hidden.commit(&mut checkpoint);
            assert_eq!(checkpoint.extra[HIDDEN_STATE_KEY]["held"], json!(["u1"]));
        }

        #[tokio::test]
        async fn a_refused_exchange_read_fails_naming_the_tenant_and_include_or_graph_ask_nothing()
        {
            let directory = directory();
            directory.refuse_exchange(true);
            let mut read = directory.read_users(None, &[]).await.unwrap();
            let error = stage(
                &ScopeRules::default(),
                &directory,
                &LinkCheckpoint::default(),
                true,
                &mut read,
            )
            .await
            .unwrap_err();
            assert!(
                error.to_string().contains("source tenant \"acme\""),
                "{error}"
            );
            for rule in [HiddenRule::Include, HiddenRule::Graph] {
                let rules = ScopeRules {
                    hidden: rule,
                    ..ScopeRules::default()
                };
                let hidden = stage(
                    &rules,
                    &directory,
                    &LinkCheckpoint::default(),
                    true,
                    &mut read,
                )
                .await
                .unwrap();
                assert!(hidden.hidden.is_empty());
                assert_eq!(hidden.warning.is_some(), rule == HiddenRule::Graph);
            }
            assert_eq!(directory.hidden_reads(), 0);
        }

        #[test]
        fn a_changed_rule_needs_a_full_read() {
            let mut checkpoint = LinkCheckpoint::default();
            let include = ScopeRules {
                hidden: HiddenRule::Include,
                ..ScopeRules::default()
            };
            assert!(!hidden_needs_full(&include, &checkpoint));
            checkpoint.extra.insert(
                HIDDEN_STATE_KEY.into(),
                json!({"rule": "exclude", "checked_at": "2026-12-06T11:00:00Z", "held": []}),
            );
            assert!(!hidden_needs_full(&ScopeRules::default(), &checkpoint));
            assert!(
                hidden_needs_full(&include, &checkpoint),
                "hidden people must come back"
            );
        }
    }

    #[test]
    fn removed_objects_are_out() {
        let removed = SourceObject::from_graph(
            &json!({"id": "u1", "@removed": {"reason": "changed"}}),
            SourceKind::User,
        )
        .unwrap();
        assert_eq!(
            ScopeRules::default().check(&removed, &none()),
            Err(OutOfScope::Removed)
        );
    }
}
