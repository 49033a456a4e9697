//! Target kind `mail_contact`: the link's people as Exchange mail contacts in another tenant's GAL, written through
//! the one Exchange client (`m365::exchange`, `InvokeCommand`; Graph cannot write org contacts).
//!
//! Rooms:
//! - [`run`]: the target ([`MailContacts`]) behind the shared lifecycle (`engine::lifecycle`) and source stage
//!   (`engine::source_stage`), intents of interrupted creates resolved, the target read on a full run, diff,
//!   safety, apply, checkpoint.
//! - [`apply`]: applying a plan with bounded concurrency and crash-safe create intents ([`MailContactApplier`]).
//! - [`purge`]: uninstalling the link (every anchored contact removed, state forgotten).

pub mod apply;
pub mod purge;
pub mod run;

pub use apply::{ApplyResult, IntentResolution, MailContactApplier};
pub use run::{DEFAULT_LEASE_TTL_SECS, MailContacts};
