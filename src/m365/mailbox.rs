//! Personal contacts in mailboxes (Graph v1.0, `Contacts.ReadWrite`, docs/microsoft-facts.md §3): contact folders, folder
//! contacts with galbridge's anchor extended property, per-folder delta, and contact photos.
//!
//! Every request here concerns one mailbox and runs under that mailbox's limiter (Outlook: 4 concurrent requests per
//! app per mailbox). Writes of contacts go through `$batch` (see `batch.rs` for the request builders); this room
//! covers the reads, folder creation, and the direct photo upload. A mailbox that refuses REST answers
//! `MailboxNotEnabledForRESTAPI`, surfaced as [`GraphError::MailboxNotEnabledForRest`] so the engine skips it.

use reqwest::Method;
use serde_json::{Value, json};

use super::graph::{DeltaStart, GraphClient, GraphError, PageStream, segment};
use super::http::ApiRequest;

/// Graph's cap on a contact photo (docs/microsoft-facts.md §3).
pub const MAX_PHOTO_BYTES: usize = 4 * 1024 * 1024;

/// The `$expand` that returns one single-value extended property (the anchor) with each contact. The property is never
/// echoed otherwise (docs/microsoft-facts.md §3); contacts without it come back without `singleValueExtendedProperties`.
pub fn expand_extended_property(property_id: &str) -> String {
    format!(
        "singleValueExtendedProperties($filter=id eq '{}')",
        property_id.replace('\'', "''")
    )
}

/// The value of extended property `property_id` on a contact read with [`expand_extended_property`].
pub fn extended_property_value<'a>(contact: &'a Value, property_id: &str) -> Option<&'a str> {
    contact
        .get("singleValueExtendedProperties")?
        .as_array()?
        .iter()
        .find(|property| {
            property
                .get("id")
                .and_then(Value::as_str)
                .is_some_and(|id| id.eq_ignore_ascii_case(property_id))
        })?
        .get("value")?
        .as_str()
}

impl GraphClient {
    fn mailbox_path(mailbox: &str, rest: &str) -> String {
        format!("users/{}/{rest}", segment(mailbox))
    }

    /// Top-level contact folders of `mailbox`.
    pub async fn contact_folders(&self, mailbox: &str) -> Result<Vec<Value>, GraphError> {
        let url = self.url(
            &Self::mailbox_path(mailbox, "contactFolders"),
            &[("$top", "100")],
        )?;
        self.mailbox_stream(url, mailbox).collect_all().await
    }

    /// Child folders of folder `parent_id`.
    pub async fn child_folders(
        &self,
        mailbox: &str,
        parent_id: &str,
    ) -> Result<Vec<Value>, GraphError> {
        let path = Self::mailbox_path(
            mailbox,
            &format!("contactFolders/{}/childFolders", segment(parent_id)),
        );
        let url = self.url(&path, &[("$top", "100")])?;
        self.mailbox_stream(url, mailbox).collect_all().await
    }

    /// Folder `folder_id`, or `None` when it no longer exists (found again by id even after the user renamed it).
    pub async fn get_contact_folder(
        &self,
        mailbox: &str,
        folder_id: &str,
    ) -> Result<Option<Value>, GraphError> {
        let url = self.url(
            &Self::mailbox_path(mailbox, &format!("contactFolders/{}", segment(folder_id))),
            &[],
        )?;
        let response = self
            .send_for(ApiRequest::get(url.clone()), Some(mailbox))
            .await?;
        if response.status.as_u16() == 404 {
            let (code, _) = response.odata_error();
            if !code.is_some_and(|code| code.eq_ignore_ascii_case("MailboxNotEnabledForRESTAPI")) {
                return Ok(None);
            }
        }
        self.expect_json(&Method::GET, &url, response, Some(mailbox))
            .map(Some)
    }

    /// Creates folder `name` at the top level (`parent_id` = `None`) or under `parent_id`; returns the folder.
    pub async fn create_contact_folder(
        &self,
        mailbox: &str,
        parent_id: Option<&str>,
        name: &str,
    ) -> Result<Value, GraphError> {
        let path = match parent_id {
            Some(parent) => Self::mailbox_path(
                mailbox,
                &format!("contactFolders/{}/childFolders", segment(parent)),
            ),
            None => Self::mailbox_path(mailbox, "contactFolders"),
        };
        let url = self.url(&path, &[])?;
        let request =
            ApiRequest::new(Method::POST, url.clone()).json(&json!({"displayName": name}));
        let response = self.send_for(request, Some(mailbox)).await?;
        self.expect_json(&Method::POST, &url, response, Some(mailbox))
    }

    /// Contacts of folder `folder_id` (`None` = the default Contacts folder), with `select`ed fields and, when
    /// `anchor_property_id` is given, that extended property expanded.
    pub fn folder_contacts(
        &self,
        mailbox: &str,
        folder_id: Option<&str>,
        select: &[&str],
        anchor_property_id: Option<&str>,
    ) -> Result<PageStream, GraphError> {
        let path = match folder_id {
            Some(folder) => Self::mailbox_path(
                mailbox,
                &format!("contactFolders/{}/contacts", segment(folder)),
            ),
            None => Self::mailbox_path(mailbox, "contacts"),
        };
        let select = select.join(",");
        let expand = anchor_property_id.map(expand_extended_property);
        let mut query = vec![("$top", "100")];
        if !select.is_empty() {
            query.push(("$select", &select));
        }
        if let Some(expand) = &expand {
            query.push(("$expand", expand));
        }
        Ok(self.mailbox_stream(self.url(&path, &query)?, mailbox))
    }

    /// `GET /users/{m}/contactFolders/{f}/contacts/delta`: changes in one folder (for the periodic drift repair).
    pub fn folder_contacts_delta(
        &self,
        mailbox: &str,
        folder_id: &str,
        select: &[&str],
        start: &DeltaStart,
    ) -> Result<PageStream, GraphError> {
        self.folder_delta_stream(mailbox, folder_id, select, start, "odata.maxpagesize=100")
    }

    /// [`GraphClient::folder_contacts_delta`] with immutable ids, for a folder read as a source: a contact moved to
    /// another folder keeps its id. The preference applies to the request it is on, so every page carries it
    /// (docs/microsoft-facts.md §12).
    pub fn folder_contacts_delta_immutable(
        &self,
        mailbox: &str,
        folder_id: &str,
        select: &[&str],
        start: &DeltaStart,
    ) -> Result<PageStream, GraphError> {
        self.folder_delta_stream(
            mailbox,
            folder_id,
            select,
            start,
            "odata.maxpagesize=100, IdType=\"ImmutableId\"",
        )
    }

    /// `GET /users/{m}/contacts/{c}/photo/$value` (`None`: the contact has no photo), the id read with the same
    /// id type as it was listed with (`immutable`).
    pub async fn contact_photo(
        &self,
        mailbox: &str,
        contact_id: &str,
        immutable: bool,
    ) -> Result<Option<Vec<u8>>, GraphError> {
        let path = Self::mailbox_path(
            mailbox,
            &format!("contacts/{}/photo/$value", segment(contact_id)),
        );
        let url = self.url(&path, &[])?;
        let mut request = ApiRequest::get(url.clone());
        if immutable {
            request = request.header("Prefer", "IdType=\"ImmutableId\"");
        }
        let response = self.send_for(request, Some(mailbox)).await?;
        if response.status.as_u16() == 404 {
            return Ok(None);
        }
        self.expect_success(&Method::GET, &url, response, Some(mailbox))
            .map(|response| Some(response.body))
    }

    fn folder_delta_stream(
        &self,
        mailbox: &str,
        folder_id: &str,
        select: &[&str],
        start: &DeltaStart,
        prefer: &str,
    ) -> Result<PageStream, GraphError> {
        let url = match start {
            DeltaStart::Resume(link) => {
                let url = url::Url::parse(link).map_err(|error| GraphError::BadUrl {
                    url: link.chars().take(200).collect(),
                    message: error.to_string(),
                })?;
                self.api.check_allowed(&url)?;
                url
            }
            DeltaStart::Full | DeltaStart::Latest => {
                let path = Self::mailbox_path(
                    mailbox,
                    &format!("contactFolders/{}/contacts/delta", segment(folder_id)),
                );
                let select = select.join(",");
                let mut query = Vec::new();
                if !select.is_empty() {
                    query.push(("$select", select.as_str()));
                }
                if *start == DeltaStart::Latest {
                    query.push(("$deltaToken", "latest"));
                }
                self.url(&path, &query)?
            }
        };
        Ok(self
            .mailbox_stream(url, mailbox)
            .with_header("Prefer", prefer))
    }

    /// `PUT /users/{m}/contacts/{c}/photo/$value` with a JPEG (≤ 4 MB).
    pub async fn put_contact_photo(
        &self,
        mailbox: &str,
        contact_id: &str,
        jpeg: Vec<u8>,
    ) -> Result<(), GraphError> {
        if jpeg.len() > MAX_PHOTO_BYTES {
            return Err(GraphError::Api {
                method: "PUT".into(),
                path: format!("contacts/{contact_id}/photo"),
                status: 413,
                code: Some("galbridgePhotoTooLarge".into()),
                message: format!("photo of {} bytes exceeds Graph's 4 MB limit", jpeg.len()),
            });
        }
        let path = Self::mailbox_path(
            mailbox,
            &format!("contacts/{}/photo/$value", segment(contact_id)),
        );
        let url = self.url(&path, &[])?;
        let request = ApiRequest::new(Method::PUT, url.clone()).bytes(jpeg, "image/jpeg");
        let response = self.send_for(request, Some(mailbox)).await?;
        self.expect_success(&Method::PUT, &url, response, Some(mailbox))
            .map(|_| ())
    }

    fn mailbox_stream(&self, url: url::Url, mailbox: &str) -> PageStream {
        PageStream::for_mailbox(self.clone(), url, mailbox)
    }
}
