//! What a source subscribes to, as data: the resource path, the change types and the longest lifetime Graph allows
//! for it (docs/microsoft-facts.md §11). Only `/users` today; a `/groups` source and a `mailbox_folder` source's
//! contact folder add their own [`Resource`] to [`resources_for_source`] and need nothing else here.

/// One kind of Graph resource a subscription watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// The `resource` of the subscription, e.g. `/users`.
    pub path: String,
    /// `changeType`: for users and groups Graph only accepts `updated` and `deleted`, and reports a new user as
    /// `updated` (docs/microsoft-facts.md §11).
    pub change_type: &'static str,
    /// The longest lifetime Graph grants for this resource, in seconds.
    pub max_lifetime_secs: u64,
}

/// `/users`: every change to a user of the tenant (41,760 minutes at most).
pub fn users() -> Resource {
    Resource {
        path: "/users".to_owned(),
        change_type: "updated,deleted",
        max_lifetime_secs: crate::config::USERS_MAX_LIFETIME_SECS,
    }
}

/// The resources a source tenant's links need watched. Every source today reads users; groups and contact folders
/// are added here when those sources exist.
pub fn resources_for_source() -> Vec<Resource> {
    vec![users()]
}
