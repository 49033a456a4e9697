//! [`GraphSource`]: the source directory over Microsoft Graph v1.0 (docs/microsoft-facts.md §2): `users/delta` with
//! `$select`, following `@odata.nextLink` until `@odata.deltaLink`; `groups/delta` likewise (mail-enabled groups as
//! sources, docs/microsoft-facts.md §10); org contacts; transitive group members.
//! Quirks handled here: an expired delta token answers `410 Gone` (or a `syncStateNotFound`/`resyncRequired` code)
//! and means "read in full"; delta replays objects (the diff is idempotent); `@removed` marks deletions.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::shapes::{any_anchor, org_contact_as_source};
use super::transport::{JsonRequest, JsonResponse, JsonTransport};
use crate::engine::entry::{SourceKind, SourceObject};
use crate::engine::ports::{PortError, SourceDirectory, SourceRead};

/// Pages followed before giving up (a loop guard: 5,000 users are 50 pages of 100... or 1 of 999).
const MAX_PAGES: usize = 100_000;

/// Reads a tenant's directory through Graph.
pub struct GraphSource {
    pub graph: Arc<dyn JsonTransport>,
    /// The tenant's directory id (GUID), when the configuration gives it; else taken from the token's `tid`.
    pub tenant_id: Option<String>,
    /// Exchange of the same tenant, to recognise org contacts galbridge wrote (their anchors are not in Graph).
    pub exchange: Option<crate::m365::ExchangeClient>,
}

fn graph_failure(what: &str, response: &JsonResponse) -> PortError {
    let (code, message, _) = response.error_parts();
    PortError::Failed {
        service: "graph".into(),
        message: format!("{what}: HTTP {} {code} {message}", response.status),
    }
}

fn is_expired_delta(response: &JsonResponse) -> bool {
    let (code, _, _) = response.error_parts();
    response.status == 410
        || ["syncStateNotFound", "resyncRequired", "syncStateInvalid"]
            .iter()
            .any(|c| code.eq_ignore_ascii_case(c))
}

impl GraphSource {
    /// One object of `{resource}` (`users`, `groups`) by id with `$select`, as a source object of `kind`; `None` when
    /// it does not exist (any more).
    async fn read_one(
        &self,
        resource: &str,
        kind: SourceKind,
        id: &str,
        select: &[String],
    ) -> Result<Option<SourceObject>, PortError> {
        let url = self.url(&format!(
            "{resource}/{}?$select={}",
            crate::m365::graph::segment(id),
            select.join(",")
        ));
        let response = self.graph.send(JsonRequest::get(url)).await?;
        if response.status == 404 {
            return Ok(None);
        }
        if !response.is_success() {
            let what = if kind == SourceKind::Group {
                "read group"
            } else {
                "read user"
            };
            return Err(graph_failure(what, &response));
        }
        Ok(SourceObject::from_graph(&response.body, kind).ok())
    }

    /// Reads `{resource}/delta` (`users`, `groups`): every page from a fresh read naming `$select`, or the changes
    /// since a stored delta link; each item becomes a source object of `kind`.
    async fn read_delta(
        &self,
        resource: &str,
        kind: SourceKind,
        delta_link: Option<&str>,
        select: &[String],
    ) -> Result<SourceRead, PortError> {
        let mut objects = Vec::new();
        let delta_link = self
            .read_delta_each(resource, kind, delta_link, select, &mut |object| {
                objects.push(object)
            })
            .await?;
        Ok(SourceRead {
            objects,
            delta_link,
        })
    }

    /// Reads a delta like [`GraphSource::read_delta`], handing each object to `each` page by page; returns the
    /// delta link.
    async fn read_delta_each(
        &self,
        resource: &str,
        kind: SourceKind,
        delta_link: Option<&str>,
        select: &[String],
        each: &mut (dyn FnMut(SourceObject) + Send),
    ) -> Result<String, PortError> {
        let first = match delta_link {
            Some(link) => link.to_owned(),
            None => self.url(&format!("{resource}/delta?$select={}", select.join(","))),
        };
        let delta = self
            .pages(first, |value| {
                if let Ok(object) = SourceObject::from_graph(value, kind) {
                    each(object);
                }
            })
            .await?;
        delta.ok_or_else(|| PortError::Failed {
            service: "graph".into(),
            message: format!("{resource}/delta ended without an @odata.deltaLink"),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}v1.0/{path}", self.graph.base())
    }

    /// Follows pages from `first`, calling `each` per page; returns the final `@odata.deltaLink` if any.
    async fn pages(
        &self,
        first: String,
        mut each: impl FnMut(&Value),
    ) -> Result<Option<String>, PortError> {
        let mut next = Some(first);
        let mut pages = 0;
        while let Some(url) = next.take() {
            pages += 1;
            if pages > MAX_PAGES {
                return Err(PortError::Failed {
                    service: "graph".into(),
                    message: "too many pages".into(),
                });
            }
            let response = self.graph.send(JsonRequest::get(url)).await?;
            if !response.is_success() {
                if is_expired_delta(&response) {
                    return Err(PortError::DeltaExpired);
                }
                return Err(graph_failure("read", &response));
            }
            if let Some(values) = response.body["value"].as_array() {
                for value in values {
                    each(value);
                }
            }
            if let Some(delta) = response.body["@odata.deltaLink"].as_str() {
                return Ok(Some(delta.to_owned()));
            }
            next = response.body["@odata.nextLink"].as_str().map(str::to_owned);
        }
        Ok(None)
    }

    /// The tenant's Exchange client, for reads of who is hidden; without one, an error saying what to grant.
    fn exchange_for_hidden(&self) -> Result<&crate::m365::ExchangeClient, PortError> {
        self.exchange.as_ref().ok_or_else(|| PortError::Failed {
            service: "exchange".into(),
            message: "no Exchange client for the source tenant: who is hidden from the address lists cannot be \
                      read"
                .into(),
        })
    }

    /// Anchors carried by the tenant's mail contacts, by their object id (for org-contact loop prevention).
    async fn anchored_contact_ids(
        &self,
    ) -> Result<std::collections::HashMap<String, String>, PortError> {
        let Some(exchange) = &self.exchange else {
            return Ok(Default::default());
        };
        let objects = exchange
            .invoke(
                "Get-MailContact",
                serde_json::json!({"ResultSize": "Unlimited"}),
                true,
            )
            .await
            .map_err(super::exchange::port_error)?;
        Ok(objects
            .iter()
            .filter_map(|object| {
                let object = object.as_object()?;
                let anchor = any_anchor(object)?;
                Some((
                    super::shapes::contact_id(object).to_ascii_lowercase(),
                    anchor,
                ))
            })
            .collect())
    }
}

/// What a source tenant's app needs to read who is hidden from the address lists (docs/app-registrations.md).
pub const HIDDEN_PERMISSION_HINT: &str = "grant the source tenant's app the Exchange.ManageAsApp application \
     permission (Office 365 Exchange Online) and the View-Only Recipients role in Exchange (a custom role group, see \
     docs/app-registrations.md), or set [links.source] hidden = \"include\" or \"graph\"";

/// A failed read of hidden flags: a refused one (401/403, access denied) says what to grant.
fn hidden_read_error(error: crate::m365::ExchangeError) -> PortError {
    if error.kind() == Some(crate::m365::ExchangeErrorKind::Permission) {
        return PortError::Failed {
            service: "exchange".into(),
            message: format!(
                "reading who is hidden from the address lists was refused ({error}): {HIDDEN_PERMISSION_HINT}"
            ),
        };
    }
    super::exchange::port_error(error)
}

/// The `tid` claim of a JWT access token (the tenant's GUID), without verifying it: we only read our own token.
pub fn tenant_id_from_token(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    claims["tid"].as_str().map(str::to_owned)
}

#[async_trait]
impl SourceDirectory for GraphSource {
    async fn tenant_id(&self) -> Result<String, PortError> {
        self.tenant_id.clone().ok_or_else(|| PortError::Failed {
            service: "graph".into(),
            message: "the tenant's directory id (GUID) is unknown; set tenant_id to the GUID"
                .into(),
        })
    }

    async fn read_users(
        &self,
        delta_link: Option<&str>,
        select: &[String],
    ) -> Result<SourceRead, PortError> {
        // Quirk (docs/microsoft-facts.md §2): query options are encoded in the delta token, so a stored deltaLink is used
        // as is; only a fresh read names `$select` (no `$top`, `$expand` or `$orderby` on users/delta).
        self.read_delta("users", SourceKind::User, delta_link, select)
            .await
    }

    async fn read_users_each(
        &self,
        delta_link: Option<&str>,
        select: &[String],
        each: &mut (dyn FnMut(SourceObject) + Send),
    ) -> Result<String, PortError> {
        self.read_delta_each("users", SourceKind::User, delta_link, select, each)
            .await
    }

    async fn read_groups(
        &self,
        delta_link: Option<&str>,
        select: &[String],
    ) -> Result<SourceRead, PortError> {
        // docs/microsoft-facts.md §10: groups/delta takes `$select` in the first request only (encoded in the tokens
        // after that) and filters on ids alone, so every group comes back and the scope keeps the mail-enabled ones.
        self.read_delta("groups", SourceKind::Group, delta_link, select)
            .await
    }

    async fn read_group(
        &self,
        id: &str,
        select: &[String],
    ) -> Result<Option<SourceObject>, PortError> {
        self.read_one("groups", SourceKind::Group, id, select).await
    }

    async fn read_org_contacts(&self) -> Result<Vec<SourceObject>, PortError> {
        let mut contacts = Vec::new();
        self.pages(self.url("contacts"), |value| {
            if let Some(object) = org_contact_as_source(value) {
                contacts.push(object);
            }
        })
        .await?;
        // Quirk: Graph's orgContact does not show Exchange custom attributes, so the anchors galbridge wrote are
        // looked up in Exchange and attached; the scope then keeps those contacts out (loop prevention).
        let anchored = self.anchored_contact_ids().await?;
        for contact in &mut contacts {
            if let Some(anchor) = anchored.get(&contact.id.to_ascii_lowercase()) {
                contact
                    .attributes
                    .insert("galbridgeAnchor".into(), Value::String(anchor.clone()));
            }
        }
        Ok(contacts)
    }

    async fn group_members(&self, group_id: &str) -> Result<Vec<String>, PortError> {
        let mut ids = Vec::new();
        let url = self.url(&format!(
            "groups/{group_id}/transitiveMembers/microsoft.graph.user?$select=id"
        ));
        self.pages(url, |value| {
            if let Some(id) = value["id"].as_str() {
                ids.push(id.to_owned());
            }
        })
        .await?;
        Ok(ids)
    }

    async fn read_user(
        &self,
        id: &str,
        select: &[String],
    ) -> Result<Option<SourceObject>, PortError> {
        self.read_one("users", SourceKind::User, id, select).await
    }

    async fn hidden_ids(&self) -> Result<std::collections::BTreeSet<String>, PortError> {
        let flags = self
            .exchange_for_hidden()?
            .hidden_recipients()
            .await
            .map_err(hidden_read_error)?;
        Ok(flags
            .into_iter()
            .filter(|flag| flag.hidden)
            .map(|flag| flag.id)
            .collect())
    }

    async fn hidden_flags(
        &self,
        changed_since: Option<chrono::DateTime<chrono::Utc>>,
        ids: &[String],
    ) -> Result<std::collections::BTreeMap<String, bool>, PortError> {
        if changed_since.is_none() && ids.is_empty() {
            return Ok(Default::default());
        }
        let flags = self
            .exchange_for_hidden()?
            .recipient_flags(changed_since, ids)
            .await
            .map_err(hidden_read_error)?;
        Ok(flags
            .into_iter()
            .filter(|flag| !flag.kind.eq_ignore_ascii_case("MailContact"))
            .map(|flag| (flag.id, flag.hidden))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::adapters::transport::Method;
    use std::sync::Mutex;

    /// Answers canned pages by URL.
    struct Canned {
        base: url::Url,
        pages: Vec<(String, u16, Value)>,
        asked: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl JsonTransport for Canned {
        async fn send(&self, request: JsonRequest) -> Result<JsonResponse, PortError> {
            assert_eq!(request.method, Method::Get);
            self.asked.lock().unwrap().push(request.url.clone());
            let (_, status, body) = self
                .pages
                .iter()
                .find(|(url, _, _)| request.url.starts_with(url))
                .expect("known url");
            Ok(JsonResponse {
                status: *status,
                body: body.clone(),
            })
        }
        fn base(&self) -> &url::Url {
            &self.base
        }
    }

    fn source(pages: Vec<(String, u16, Value)>) -> (GraphSource, Arc<Canned>) {
        let canned = Arc::new(Canned {
            base: "https://graph.test/".parse().unwrap(),
            pages,
            asked: Mutex::new(Vec::new()),
        });
        (
            GraphSource {
                graph: canned.clone(),
                tenant_id: Some("t1".into()),
                exchange: None,
            },
            canned,
        )
    }

    #[tokio::test]
    async fn full_read_follows_pages_to_the_delta_link() {
        let (graph, canned) = source(vec![
            (
                "https://graph.test/v1.0/users/delta?$select=".into(),
                200,
                serde_json::json!({"value": [{"id": "u1", "displayName": "Ada"}], "@odata.nextLink": "https://graph.test/page2"}),
            ),
            (
                "https://graph.test/page2".into(),
                200,
                serde_json::json!({"value": [{"id": "u2", "@removed": {"reason": "deleted"}}], "@odata.deltaLink": "https://graph.test/delta?token=x"}),
            ),
        ]);
        let read = graph
            .read_users(None, &["id".into(), "displayName".into()])
            .await
            .unwrap();
        assert_eq!(read.objects.len(), 2);
        assert!(read.objects[1].removed.is_some());
        assert_eq!(read.delta_link, "https://graph.test/delta?token=x");
        assert!(canned.asked.lock().unwrap()[0].ends_with("$select=id,displayName"));
    }

    #[tokio::test]
    async fn gone_means_delta_expired() {
        let (graph, _) = source(vec![(
            "https://graph.test/delta".into(),
            410,
            serde_json::json!({"error": {"code": "syncStateNotFound", "message": "expired"}}),
        )]);
        assert_eq!(
            graph
                .read_users(Some("https://graph.test/delta?token=old"), &[])
                .await
                .unwrap_err(),
            PortError::DeltaExpired
        );
    }

    #[test]
    fn tid_is_read_from_the_token() {
        use base64::Engine as _;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"tid":"abc-123","aud":"x"}"#);
        assert_eq!(
            tenant_id_from_token(&format!("h.{payload}.s")).as_deref(),
            Some("abc-123")
        );
        assert_eq!(tenant_id_from_token("garbage"), None);
    }
}
