//! The deletion safety net. When a run would remove (delete or hide) more than the link's threshold (a count, or a
//! share of the managed objects: either trips it), the link is quarantined: the removals are held, the rest of the
//! plan applies, and an operator releases it once with `allow_deletes`. A full read that returns nobody in scope
//! while the link manages objects is always held (a broken filter or an empty read must never empty the target).

use chrono::{DateTime, Utc};

use super::plan::Plan;
use crate::report::QuarantineInfo;

/// The link's deletion threshold: the configuration's `[links.safety]`, which states the rule.
pub use crate::config::Safety as SafetyLimits;

/// Why the safety net tripped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trip {
    TooMany {
        removals: u64,
        limit: u64,
    },
    TooLargeShare {
        removals: u64,
        managed: u64,
        percent: u8,
    },
    EmptySource {
        managed: u64,
    },
}

impl Trip {
    /// The threshold that tripped, for the quarantine and the report.
    pub fn describe(&self) -> String {
        match self {
            Trip::TooMany { removals, limit } => {
                format!("{removals} removals exceed max_deletes = {limit}")
            }
            Trip::TooLargeShare {
                removals,
                managed,
                percent,
            } => {
                format!(
                    "{removals} removals of {managed} managed objects exceed max_delete_percent = {percent}"
                )
            }
            Trip::EmptySource { managed } => {
                format!("the source returned nobody in scope while {managed} objects are managed")
            }
        }
    }
}

/// Decides whether the plan's removals trip the safety net. `source_in_scope` is the number of entries in scope
/// on a full read (`None` on incremental reads).
pub fn check(
    plan: &Plan,
    limits: SafetyLimits,
    managed: u64,
    source_in_scope: Option<u64>,
) -> Option<Trip> {
    trip(
        limits,
        plan.removals.len() as u64,
        managed,
        source_in_scope == Some(0),
    )
}

/// Whether `removals` out of `managed` objects trip the net; `empty_source`: a full read found nobody in scope,
/// which always trips while anything is managed. Every target kind's safety check comes here.
pub fn trip(limits: SafetyLimits, removals: u64, managed: u64, empty_source: bool) -> Option<Trip> {
    if removals == 0 {
        return None;
    }
    if empty_source && managed > 0 {
        return Some(Trip::EmptySource { managed });
    }
    if limits.exceeds_count(removals) {
        return Some(Trip::TooMany {
            removals,
            limit: limits.max_deletes,
        });
    }
    if limits.exceeds_share(removals, managed) {
        return Some(Trip::TooLargeShare {
            removals,
            managed,
            percent: limits.max_delete_percent,
        });
    }
    None
}

/// Applies the safety net to a plan: holds its removals when the threshold trips and deletes are not allowed.
/// Returns the quarantine to record (kept `since` the first trip), or `None` when the plan may apply in full.
pub fn enforce(
    plan: &mut Plan,
    limits: SafetyLimits,
    managed: u64,
    source_in_scope: Option<u64>,
    allow_deletes: bool,
    previous: Option<&QuarantineInfo>,
    now: DateTime<Utc>,
) -> Option<QuarantineInfo> {
    let trip = check(plan, limits, managed, source_in_scope)?;
    if allow_deletes {
        return None;
    }
    plan.held.append(&mut plan.removals);
    Some(quarantine(
        &plan.link,
        previous,
        now,
        plan.held.len() as u64,
        trip.describe(),
        plan.held
            .iter()
            .map(|r| (r.anchor.as_str(), r.display_name.as_str())),
    ))
}

/// The quarantine a tripped net records, for any target kind: kept `since` the first trip, with the threshold that
/// tripped, how to release it, and a sample of what is held (anchor, display name).
pub fn quarantine<'a>(
    link: &str,
    previous: Option<&QuarantineInfo>,
    now: DateTime<Utc>,
    held_deletes: u64,
    threshold: String,
    held: impl Iterator<Item = (&'a str, &'a str)>,
) -> QuarantineInfo {
    QuarantineInfo {
        since: previous.map(|q| q.since).unwrap_or(now),
        held_deletes,
        threshold,
        release_hint: format!(
            "review with `galbridge plan --link {link}`, then release once with `galbridge sync --link {link} --allow-deletes` \
             or POST /api/sync/{link}?allow_deletes=true"
        ),
        held: crate::report::HeldDelete::sample(held),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::{Removal, RemovalAction};

    fn plan_removing(n: usize) -> Plan {
        Plan {
            link: "acme-to-northern".into(),
            removals: (0..n)
                .map(|i| Removal {
                    anchor: format!("galbridge:t:{i}"),
                    target_id: format!("c{i}"),
                    display_name: format!("P{i}"),
                    action: RemovalAction::Delete,
                    reason: "removed".into(),
                })
                .collect(),
            ..Plan::default()
        }
    }

    #[test]
    fn below_both_limits_nothing_is_held() {
        let mut plan = plan_removing(5);
        let limits = SafetyLimits {
            max_deletes: 50,
            max_delete_percent: 10,
        };
        assert_eq!(
            enforce(&mut plan, limits, 100, Some(95), false, None, Utc::now()),
            None
        );
        assert_eq!(plan.removals.len(), 5);
        assert!(plan.held.is_empty());
    }

    #[test]
    fn count_or_share_trips_and_holds_every_removal() {
        let limits = SafetyLimits {
            max_deletes: 3,
            max_delete_percent: 50,
        };
        let mut plan = plan_removing(4);
        let quarantine = enforce(&mut plan, limits, 1000, None, false, None, Utc::now()).unwrap();
        assert!(plan.removals.is_empty());
        assert_eq!(plan.held.len(), 4);
        assert_eq!(quarantine.held_deletes, 4);
        assert!(quarantine.threshold.contains("max_deletes = 3"));
        assert!(quarantine.release_hint.contains("--allow-deletes"));
        assert_eq!(quarantine.held[0].display_name, "P0");

        let limits = SafetyLimits {
            max_deletes: 100,
            max_delete_percent: 10,
        };
        assert_eq!(
            check(&plan_removing(10), limits, 100, None),
            None,
            "exactly 10% is allowed"
        );
        assert_eq!(
            check(&plan_removing(11), limits, 100, None),
            Some(Trip::TooLargeShare {
                removals: 11,
                managed: 100,
                percent: 10
            })
        );
    }

    #[test]
    fn allow_deletes_releases_once() {
        let limits = SafetyLimits {
            max_deletes: 1,
            max_delete_percent: 100,
        };
        let mut plan = plan_removing(5);
        assert_eq!(
            enforce(&mut plan, limits, 10, None, true, None, Utc::now()),
            None
        );
        assert_eq!(plan.removals.len(), 5);
    }

    #[test]
    fn an_empty_source_never_empties_the_target() {
        let limits = SafetyLimits {
            max_deletes: 1000,
            max_delete_percent: 100,
        };
        let mut plan = plan_removing(3);
        let quarantine = enforce(&mut plan, limits, 3, Some(0), false, None, Utc::now()).unwrap();
        assert!(quarantine.threshold.contains("returned nobody"));
        assert!(plan.removals.is_empty());
    }

    #[test]
    fn quarantine_keeps_its_start_time() {
        let since = Utc::now() - chrono::Duration::hours(5);
        let previous = QuarantineInfo {
            since,
            held_deletes: 2,
            threshold: String::new(),
            release_hint: String::new(),
            held: Vec::new(),
        };
        let limits = SafetyLimits {
            max_deletes: 1,
            max_delete_percent: 100,
        };
        let mut plan = plan_removing(2);
        let quarantine = enforce(
            &mut plan,
            limits,
            100,
            None,
            false,
            Some(&previous),
            Utc::now(),
        )
        .unwrap();
        assert_eq!(quarantine.since, since);
    }
}
