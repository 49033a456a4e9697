//! Target kind `guest_user`: the link's people as B2B guest users in another tenant, shown in its GAL (what Entra
//! cross-tenant synchronization makes, from galbridge's configuration and with its safety rails).
//! docs/microsoft-facts.md §5: a guest is made by `POST /invitations` (no mail sent), its fields and anchor
//! (`onPremisesExtensionAttributes.extensionAttributeN`) are written by `PATCH /users/{id}`, and it is shown in the
//! GAL only through Exchange (`Set-MailUser`), once Exchange knows it.
//!
//! Rooms:
//! - [`plan`]: from the source batch, the managed records and (on a full run, or when someone is to be invited)
//!   the target's guests and mail contacts, to the shared [`crate::engine::plan::Plan`] (the mail contacts a
//!   migration removes first are among its removals).
//! - [`apply`]: invitations, field updates, removals (block sign-in or delete), the GAL step.
//! - [`GuestUsers`] (here): the target; [`run`]: its `Target` phases behind the shared lifecycle; [`purge`]:
//!   uninstalling; [`fields`]: what a guest carries.

pub mod apply;
pub mod fields;
pub mod plan;
pub mod purge;
pub mod run;

pub use fields::{graph_property, guest_carries};

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::config::GuestUserOptions;
use crate::engine::ports::GuestUserTarget;

/// The `guest_user` target of one link: the target tenant's guests and the link's target options.
pub struct GuestUsers {
    pub port: Arc<dyn GuestUserTarget>,
    pub options: GuestUserOptions,
    /// Set by a plan that forgot another kind's records on an incremental read: the next run must read in full.
    pub(crate) needs_full: AtomicBool,
}

impl GuestUsers {
    pub fn new(port: Arc<dyn GuestUserTarget>, options: GuestUserOptions) -> GuestUsers {
        GuestUsers {
            port,
            options,
            needs_full: AtomicBool::new(false),
        }
    }
}
