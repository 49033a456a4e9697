//! Work queues: where a phones run's shards go when more than one process should share them (issue 17).
//!
//! A `personal_contacts` run over many mailboxes is split into shards of a few hundred mailboxes. Under the Functions
//! host each shard is one message in an Azure Storage Queue, and the queue-triggered function `PhonesShard` processes
//! one message per invocation; the host retries a failed message and, after `maxDequeueCount` tries, moves it to the
//! poison queue (`{queue}-poison`), which `status` reports. The CLI (and any configuration without a queue) runs the
//! shards in-process and needs no queue.
//!
//! The message text is opaque here: the engine owns its JSON. This module owns the [`ShardQueue`] port, the
//! in-memory implementation used by tests, (in [`azure`]) the Azure Storage Queue REST client, and [`from_config`],
//! which opens the queue `[service.shard_queue]` (or the Functions connection settings `GALBRIDGE_QUEUE__*`) names.

pub mod azure;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

/// Why a queue operation failed. The message never contains a credential.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The queue service answered with an error (status and the service's error code, if any).
    #[error("queue {queue}: {operation} failed with HTTP {status}: {message}")]
    Service {
        queue: String,
        operation: &'static str,
        status: u16,
        message: String,
    },
    /// The request did not reach the service or its answer could not be read.
    #[error("queue {queue}: {operation}: {message}")]
    Transport {
        queue: String,
        operation: &'static str,
        message: String,
    },
    /// A message larger than the service allows (Azure: 64 KiB after encoding).
    #[error("queue {queue}: a message of {bytes} bytes is over the {limit}-byte limit")]
    TooLarge {
        queue: String,
        bytes: usize,
        limit: usize,
    },
}

/// Why the configured queue could not be opened. Names the configuration key; never a key or a token.
#[derive(Debug, thiserror::Error)]
pub enum QueueConfigError {
    #[error(
        "service.shard_queue.auth: environment variable {0} with the storage connection string is not set"
    )]
    MissingConnectionString(String),
    #[error("service.shard_queue.auth: {0}")]
    BadConnectionString(String),
    #[error(
        "service.shard_queue.endpoint: required with managed identity (or set GALBRIDGE_QUEUE__queueServiceUri)"
    )]
    MissingEndpoint,
    #[error("service.shard_queue: cannot set up the managed identity for Queue Storage: {0}")]
    Identity(String),
    #[error("service.extra_ca_file: {0}")]
    Http(String),
    #[error("service.shard_queue.name: {0}")]
    Name(String),
}

/// The shard queue the configuration names, or `None` when there is none (shards then run in-process). Nothing is
/// sent: the queue is created on the first send that finds it missing.
pub fn from_config(
    config: &crate::config::Config,
) -> Result<Option<Arc<dyn ShardQueue>>, QueueConfigError> {
    Ok(azure_from_config(config)?.map(|queue| Arc::new(queue) as Arc<dyn ShardQueue>))
}

/// As [`from_config`], with the concrete client (for callers that also take messages: tests, tools).
pub fn azure_from_config(
    config: &crate::config::Config,
) -> Result<Option<azure::AzureQueue>, QueueConfigError> {
    azure_from_config_with_env(config, &|name: &str| std::env::var(name).ok())
}

/// As [`azure_from_config`], reading the connection-string variable through `env`.
pub fn azure_from_config_with_env(
    config: &crate::config::Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<azure::AzureQueue>, QueueConfigError> {
    use crate::config::TableAuth as AuthSetting;
    use crate::state::table::{ConnectionString, TableAuth};
    let service = config.service();
    let Some(settings) = &service.shard_queue else {
        return Ok(None);
    };
    let (endpoint, auth) = match &settings.auth {
        AuthSetting::ConnectionStringEnv(variable) => {
            let text = env(variable)
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| QueueConfigError::MissingConnectionString(variable.clone()))?;
            let parsed = ConnectionString::parse(&text)
                .map_err(|e| QueueConfigError::BadConnectionString(e.to_string()))?;
            let endpoint = settings
                .endpoint
                .as_ref()
                .map_or(parsed.queue_endpoint, |endpoint| endpoint.url().clone());
            (endpoint, parsed.auth)
        }
        AuthSetting::ManagedIdentity => {
            let endpoint = settings
                .endpoint
                .as_ref()
                .ok_or(QueueConfigError::MissingEndpoint)?;
            let client_id = settings
                .managed_identity_client_id
                .as_ref()
                .or(service.managed_identity_client_id.as_ref());
            let options = azure_identity::ManagedIdentityCredentialOptions {
                user_assigned_id: client_id
                    .map(|id| azure_identity::UserAssignedId::ClientId(id.as_str().to_owned())),
                ..Default::default()
            };
            let credential = azure_identity::ManagedIdentityCredential::new(Some(options))
                .map_err(|e| QueueConfigError::Identity(e.to_string()))?;
            (endpoint.url().clone(), TableAuth::Token(credential))
        }
    };
    let http = crate::m365::http::build_http_client(
        &crate::m365::http::HttpSettings {
            extra_ca_file: service.extra_ca_file.clone(),
            ..Default::default()
        }
        .with_env_overrides(),
    )
    .map_err(|e| QueueConfigError::Http(e.to_string()))?;
    let queue = azure::AzureQueue::new(
        azure::AzureQueueConfig {
            endpoint,
            name: settings.name.clone(),
            auth,
            retry: Default::default(),
            encoding: azure::MessageEncoding::Base64,
        },
        http,
    )
    .map_err(|e| QueueConfigError::Name(e.to_string()))?;
    Ok(Some(queue))
}

/// A message the host gave up on (moved to the poison queue after its last try).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoisonMessage {
    /// The queue service's message id.
    pub id: String,
    /// The message text as it was sent (decoded).
    pub text: String,
    /// When it was put in the poison queue (RFC 3339), if the service says.
    pub inserted: Option<String>,
}

/// Where shards are sent, and where the poisoned ones are read back from.
#[async_trait]
pub trait ShardQueue: Send + Sync {
    /// The queue's name (for reports and logs).
    fn name(&self) -> &str;

    /// Puts one message (UTF-8 JSON text) on the queue. Encoding (base64, as the Functions host's queue trigger
    /// expects by default) is the implementation's business.
    async fn send(&self, text: &str) -> Result<(), QueueError>;

    /// The messages in the poison queue, peeked (not removed): at most `max` (Azure peeks at most 32 at once).
    async fn poisoned(&self, max: usize) -> Result<Vec<PoisonMessage>, QueueError>;
}

/// An in-memory queue (tests): what was sent, in order; poisoned messages are put there by the test.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    name: String,
    sent: Mutex<VecDeque<String>>,
    poison: Mutex<Vec<PoisonMessage>>,
}

impl MemoryQueue {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            ..Self::default()
        }
    }

    /// Takes the oldest message sent (what a consumer would receive next).
    pub fn receive(&self) -> Option<String> {
        self.sent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop_front()
    }

    /// How many messages wait.
    pub fn len(&self) -> usize {
        self.sent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves a message to the poison queue, as the host does after its last try.
    pub fn poison(&self, message: PoisonMessage) {
        self.poison
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(message);
    }
}

#[async_trait]
impl ShardQueue for MemoryQueue {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, text: &str) -> Result<(), QueueError> {
        self.sent
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push_back(text.to_string());
        Ok(())
    }

    async fn poisoned(&self, max: usize) -> Result<Vec<PoisonMessage>, QueueError> {
        let poison = self
            .poison
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Ok(poison.iter().take(max).cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_queue_is_first_in_first_out_and_keeps_poison_apart() {
        let queue = MemoryQueue::new("shards");
        queue.send("one").await.expect("send");
        queue.send("two").await.expect("send");
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.receive().as_deref(), Some("one"));
        queue.poison(PoisonMessage {
            id: "m1".into(),
            text: "bad".into(),
            inserted: None,
        });
        assert_eq!(queue.poisoned(32).await.expect("peek").len(), 1);
        assert_eq!(queue.receive().as_deref(), Some("two"));
        assert!(queue.is_empty());
    }
}
