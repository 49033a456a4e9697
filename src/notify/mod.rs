//! Near-real-time sync from Microsoft Graph change notifications (issue 19, docs/microsoft-facts.md §11).
//!
//! A notification never carries data into a target. The `Notify` function (`functions::handlers::notify`) checks each
//! notification's `clientState` against the per-subscription secret kept in the state store, then only *marks* the
//! links whose source tenant changed as due at now + `debounce`; the serving process (and the timer, on any
//! instance) runs marked links once their mark is due, as the usual delta run under the usual lease. A lost or
//! forged notification can therefore do no harm beyond an early run.
//!
//! - [`payload`]: the `changeNotificationCollection` Graph posts, parsed tolerantly;
//! - [`resources`]: what a source subscribes to, as data (`/users` today; `/groups` and contact folders plug in);
//! - [`records`]: subscriptions and due marks in the state store (their own partition, [`records::NOTIFY_PARTITION`]);
//! - [`notifier`]: accepting a batch, maintaining subscriptions (create, renew, recreate, remove), running the due.

pub mod notifier;
pub mod payload;
pub mod records;
pub mod resources;

pub use notifier::{NotifiedRuns, Notifier, NotifyReceipt};
