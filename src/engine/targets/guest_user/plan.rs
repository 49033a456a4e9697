//! The guest target's plan: the shared diff (`engine::diff`) over entries restricted to what a guest carries and
//! over the target's *anchored* guests only, then the checks every invitation needs before it is sent, because an
//! invitation of an address that already has a guest answers with that guest (docs/microsoft-facts.md §5):
//! - a guest with the address and this person's anchor is ours (an interrupted run): taken back (adoption);
//! - an unanchored guest with the address is adopted only when the link opts in (or our own interrupted create
//!   made it), else it is a conflict: galbridge never touches a guest without its anchor;
//! - a mail contact with the address would leave the guest without mail, so it could never be in the GAL
//!   (docs/microsoft-facts.md §5): a conflict, unless it is galbridge's own contact of the same person and the link
//!   migrates from `mail_contact`, in which case the contact is removed first.

use std::collections::{BTreeMap, HashMap};

use super::fields::guest_carries;
use crate::config::{GuestOnDelete, GuestUserOptions};
use crate::engine::diff::{
    DiffInput, DiffPolicy, ManagedObject, OnDelete, SourceView, TargetObject, diff, field_changes,
};
use crate::engine::entry::{Entry, Field};
use crate::engine::plan::{Adoption, Conflict, ConflictKind, Plan, Removal, RemovalAction};

/// The diff's policy for a guest link: blocking sign-in is the diff's `hide` (a reversible removal).
pub fn policy(options: &GuestUserOptions) -> DiffPolicy {
    DiffPolicy {
        on_delete: match options.on_delete {
            GuestOnDelete::BlockSignIn => OnDelete::Hide,
            GuestOnDelete::Delete => OnDelete::Delete,
            GuestOnDelete::Keep => OnDelete::Keep,
        },
        adopt_existing: options.adopt_existing,
    }
}

/// Only the fields a guest carries (others are not synced to guests and never compared).
pub fn guest_entry(entry: &Entry) -> Entry {
    let mut entry = entry.clone();
    entry.fields.retain(|field, _| guest_carries(*field));
    entry
}

/// The shared diff for guests. `guests` is every guest of the target on a full run (`None` otherwise); only the
/// anchored ones take part, so an address match never turns into an update of someone else's guest.
pub fn diff_guests(
    source: &SourceView,
    managed: &BTreeMap<String, ManagedObject>,
    guests: Option<&[TargetObject]>,
    anchor_prefix: &str,
    options: &GuestUserOptions,
) -> Plan {
    let source = SourceView {
        desired: source
            .desired
            .iter()
            .map(|(anchor, entry)| (anchor.clone(), guest_entry(entry)))
            .collect(),
        gone: source.gone.clone(),
        complete: source.complete,
    };
    let anchored: Option<Vec<TargetObject>> =
        guests.map(|all| all.iter().filter(|g| g.anchor.is_some()).cloned().collect());
    let mut plan = diff(&DiffInput {
        source: &source,
        managed,
        target: anchored.as_deref(),
        anchor_prefix,
        policy: &policy(options),
        names: None,
    });
    // A create intent whose guest is already anchored (a run died after the PATCH, before its record): the diff
    // sees the guest as ours and unchanged; claim it, so the record gets its id and the guest reaches the GAL.
    if let Some(anchored) = &anchored {
        for guest in anchored {
            let Some(anchor) = guest.anchor.as_deref() else {
                continue;
            };
            let interrupted = managed.get(anchor).is_some_and(|m| m.pending);
            let planned = plan.updates.iter().any(|u| u.anchor == anchor);
            if let (true, false, Some(entry)) = (interrupted, planned, source.desired.get(anchor)) {
                plan.unchanged = plan.unchanged.saturating_sub(1);
                plan.adoptions.push(Adoption {
                    anchor: anchor.to_owned(),
                    target_id: guest.id.clone(),
                    name: guest.name.clone(),
                    changes: Vec::new(),
                    entry: entry.clone(),
                });
            }
        }
    }
    // A guest has no Exchange `Name` to keep unique, and its address is the invitation's: neither is an update.
    let updates = std::mem::take(&mut plan.updates);
    for mut update in updates {
        update.rename = None;
        update.changes.retain(|change| change.field != Field::Email);
        if update.changes.is_empty() && !update.unhide {
            plan.unchanged += 1;
        } else {
            plan.updates.push(update);
        }
    }
    plan
}

fn by_address(objects: &[TargetObject]) -> HashMap<String, &TargetObject> {
    objects
        .iter()
        .filter(|o| !o.address.is_empty())
        .map(|o| (o.address.to_ascii_lowercase(), o))
        .collect()
}

/// Checks every planned invitation against the target's guests and mail contacts (see the module header); returns
/// the mail contacts to remove first. Creates that cannot go ahead become adoptions or conflicts.
pub fn check_creates(
    plan: &mut Plan,
    managed: &BTreeMap<String, ManagedObject>,
    guests: &[TargetObject],
    contacts: &[TargetObject],
    options: &GuestUserOptions,
) -> Vec<Removal> {
    let guests = by_address(guests);
    let contacts = by_address(contacts);
    let mut contact_removals = Vec::new();
    let creates = std::mem::take(&mut plan.creates);
    for create in creates {
        let Some(address) = create.entry.email_key() else {
            plan.conflicts.push(Conflict {
                anchor: create.anchor.clone(),
                kind: ConflictKind::Address,
                detail: "no email address to invite".into(),
            });
            continue;
        };
        let ours = |anchor: &Option<String>| anchor.as_deref() == Some(create.anchor.as_str());
        if let Some(guest) = guests.get(&address) {
            let interrupted = managed.get(&create.anchor).is_some_and(|m| m.pending);
            if ours(&guest.anchor)
                || (guest.anchor.is_none() && (options.adopt_existing || interrupted))
            {
                plan.adoptions.push(Adoption {
                    anchor: create.anchor.clone(),
                    target_id: guest.id.clone(),
                    name: guest.name.clone(),
                    // The anchor is written whatever changed; the fields as they differ.
                    changes: field_changes(&guest.fields, &create.entry)
                        .into_iter()
                        .filter(|c| c.field != Field::Email)
                        .collect(),
                    entry: create.entry.clone(),
                });
            } else {
                let owner = match &guest.anchor {
                    Some(anchor) => format!("guest {:?} anchored to {anchor}", guest.name),
                    None => format!(
                        "unanchored guest {:?} (set adopt_existing to take it over)",
                        guest.name
                    ),
                };
                plan.conflicts.push(Conflict {
                    anchor: create.anchor.clone(),
                    kind: ConflictKind::Address,
                    detail: format!("{address} is already used by {owner}"),
                });
            }
            continue;
        }
        if let Some(contact) = contacts.get(&address) {
            if ours(&contact.anchor) && options.migrate_from_mail_contact {
                contact_removals.push(Removal {
                    anchor: create.anchor.clone(),
                    target_id: contact.id.clone(),
                    display_name: contact.name.clone(),
                    action: RemovalAction::Delete,
                    reason: super::apply::MIGRATED.into(),
                });
                plan.creates.push(create);
            } else {
                let hint = if ours(&contact.anchor) {
                    "galbridge's own mail contact of this person (set migrate_from_mail_contact to replace it)"
                } else {
                    "a mail contact galbridge does not own"
                };
                // Quirk (docs/microsoft-facts.md §5): the invitation would make a guest without mail, never in the GAL.
                plan.conflicts.push(Conflict {
                    anchor: create.anchor.clone(),
                    kind: ConflictKind::Address,
                    detail: format!(
                        "{address} belongs to mail contact {:?}, {hint}; a guest with it could not be mail-enabled",
                        contact.name
                    ),
                });
            }
            continue;
        }
        plan.creates.push(create);
    }
    contact_removals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GuestUserType;
    use crate::engine::plan::Create;

    fn options(adopt: bool, migrate: bool) -> GuestUserOptions {
        GuestUserOptions {
            anchor_attribute: 15,
            user_type: GuestUserType::Member,
            show_in_gal: true,
            on_delete: GuestOnDelete::BlockSignIn,
            adopt_existing: adopt,
            migrate_from_mail_contact: migrate,
            redirect_url: "https://myapps.microsoft.com".into(),
        }
    }

    fn object(id: &str, anchor: Option<&str>, address: &str) -> TargetObject {
        TargetObject {
            id: id.into(),
            anchor: anchor.map(str::to_owned),
            name: id.into(),
            address: address.into(),
            hidden: false,
            fields: BTreeMap::from([(Field::Email, address.to_owned())]),
        }
    }

    fn plan_creating(anchor: &str, address: &str) -> Plan {
        let mut entry = Entry::new(anchor);
        entry.set(Field::Email, address);
        entry.set(Field::DisplayName, "Ada");
        Plan {
            creates: vec![Create {
                anchor: anchor.into(),
                name: "Ada".into(),
                entry,
            }],
            ..Plan::default()
        }
    }

    #[test]
    fn an_unanchored_guest_is_a_conflict_unless_adoption_is_on() {
        let guests = [object("g1", None, "ada@acme.com")];
        let mut plan = plan_creating("galbridge:t:1", "ada@acme.com");
        check_creates(
            &mut plan,
            &BTreeMap::new(),
            &guests,
            &[],
            &options(false, false),
        );
        assert!(plan.creates.is_empty() && plan.adoptions.is_empty());
        assert_eq!(plan.conflicts.len(), 1, "{plan:?}");
        let mut plan = plan_creating("galbridge:t:1", "ada@acme.com");
        check_creates(
            &mut plan,
            &BTreeMap::new(),
            &guests,
            &[],
            &options(true, false),
        );
        assert_eq!(plan.adoptions[0].target_id, "g1");
    }

    #[test]
    fn a_mail_contact_with_the_address_is_removed_first_only_when_ours_and_migrating() {
        let contacts = [object("c1", Some("galbridge:t:1"), "ada@acme.com")];
        let mut plan = plan_creating("galbridge:t:1", "ada@acme.com");
        let removals = check_creates(
            &mut plan,
            &BTreeMap::new(),
            &[],
            &contacts,
            &options(false, true),
        );
        assert_eq!(removals[0].target_id, "c1");
        assert_eq!(plan.creates.len(), 1);
        let mut plan = plan_creating("galbridge:t:1", "ada@acme.com");
        let removals = check_creates(
            &mut plan,
            &BTreeMap::new(),
            &[],
            &contacts,
            &options(false, false),
        );
        assert!(removals.is_empty() && plan.creates.is_empty());
        assert!(
            plan.conflicts[0]
                .detail
                .contains("migrate_from_mail_contact")
        );
        let foreign = [object("c2", None, "ada@acme.com")];
        let mut plan = plan_creating("galbridge:t:1", "ada@acme.com");
        let removals = check_creates(
            &mut plan,
            &BTreeMap::new(),
            &[],
            &foreign,
            &options(true, true),
        );
        assert!(removals.is_empty() && plan.creates.is_empty() && plan.conflicts.len() == 1);
    }
}
