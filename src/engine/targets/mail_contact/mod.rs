//! Target kind `mail_contact`: the link's people as Exchange mail contacts in another tenant's GAL, written through
//! the one Exchange client (`m365::exchange`, `InvokeCommand`; Graph cannot write org contacts).
//!
//! Rooms:
//! - [`MailContacts`] (here): the target; [`run`]: its `Target` phases behind the shared lifecycle
//!   (`engine::lifecycle`) and source stage (`engine::source_stage`): intents of interrupted creates resolved, the
//!   target read on a full run, diff, safety, apply.
//! - [`apply`]: applying a plan with bounded concurrency and crash-safe create intents ([`MailContactApplier`]).
//! - [`purge`]: uninstalling the link (every anchored contact removed, state forgotten).

pub mod apply;
pub mod purge;
pub mod run;

pub use apply::{ApplyResult, IntentResolution, MailContactApplier};

use std::sync::Arc;

use crate::engine::ports::MailContactTarget;
use crate::engine::spec::MailContactOptions;

/// Default lease duration; the lease is renewed every third of it while the run lasts.
pub const DEFAULT_LEASE_TTL_SECS: i64 = 120;

/// The `mail_contact` target of one link: the target tenant's Exchange and the link's target options.
#[derive(Clone)]
pub struct MailContacts {
    pub port: Arc<dyn MailContactTarget>,
    pub options: MailContactOptions,
}
