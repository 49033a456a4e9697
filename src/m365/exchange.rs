//! Exchange Online `InvokeCommand` (docs/microsoft-facts.md §1): the REST endpoint the ExchangeOnlineManagement v3 module
//! uses, and the only way to write mail contacts (Graph's `orgContact` is read-only).
//!
//! `POST {exchange}/adminapi/beta/{tenant}/InvokeCommand` with `{"CmdletInput":{"CmdletName","Parameters"}}`, headers
//! `X-AnchorMailbox: UPN:SystemMailbox{bb558c35-…}@{initial domain}`, `X-ResponseFormat: json`,
//! `Prefer: odata.maxpagesize=1000`; results in `value`, further pages by POSTing the same body to `@odata.nextLink`.
//! Not officially supported by Microsoft; shapes marked [unverified] below are defensive guesses.
//!
//! Errors arrive as HTTP 400 (client errors) or 5xx with `{"error":{"code","message","details":[{"message"}],
//! "innererror":{"type"}}}` whose text names the .NET exception [unverified shape, from the module's error handling];
//! [`ExchangeErrorKind`] classifies them by those names.

use std::sync::Arc;

use reqwest::Method;
use serde_json::{Map, Value, json};
use url::Url;

use super::counters::RequestCounters;
use super::http::{ApiClient, ApiRequest, ApiResponse, HttpError};

/// The system mailbox every tenant has; ExchangeOnlineManagement anchors admin requests on it.
const ANCHOR_SYSTEM_MAILBOX: &str = "SystemMailbox{bb558c35-97f1-4cb9-8ff7-d53741dc928c}";

/// Prefix of every galbridge anchor value (docs/architecture.md, "Anchors and ownership").
pub const ANCHOR_PREFIX: &str = "galbridge:";

/// What kind of failure a cmdlet had, so the engine can report conflicts instead of failing the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeErrorKind {
    /// The address is already some recipient's proxy address (`ProxyAddressExistsException`): a reported conflict.
    AddressInUse,
    /// The Name is already used in the tenant (`ADObjectAlreadyExistsException`): pick another name.
    NameInUse,
    /// The object does not exist (`ManagementObjectNotFoundException`, 404).
    NotFound,
    /// Still busy or throttled after every retry (`ServerBusyException` & co, 429/503/504).
    Transient,
    /// The app lacks `Exchange.ManageAsApp` or the Exchange Recipient Administrator role (401/403, access denied).
    Permission,
    /// A parameter was refused (`ParameterBindingException`, validation errors).
    InvalidParameter,
    /// Anything else.
    Other,
}

/// Errors of `InvokeCommand`.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("Exchange {cmdlet} failed ({kind:?}, HTTP {status}): {message}")]
    Command {
        cmdlet: String,
        kind: ExchangeErrorKind,
        status: u16,
        message: String,
    },
    #[error("Exchange {cmdlet}: unexpected response body: {message}")]
    Decode { cmdlet: String, message: String },
    #[error("invalid Exchange URL: {0}")]
    BadUrl(String),
}

impl ExchangeError {
    /// The classification of a cmdlet failure (`None` for transport-level errors).
    pub fn kind(&self) -> Option<ExchangeErrorKind> {
        match self {
            ExchangeError::Command { kind, .. } => Some(*kind),
            _ => None,
        }
    }
}

/// Every string of an error body, at any depth, joined by newlines; the raw text when the body is not JSON.
///
/// Quirk (docs/microsoft-facts.md, "Exchange errors"): where the exception name sits is not documented. It has been
/// seen in `error.message` (`"|Microsoft.Exchange…Exception|text"`) and `error.innererror.type`, and only in
/// `error.details[0].message` (`"ExNNNNNN|Type|text"`) and `error.innererror.internalexception.type` under a generic
/// `ODataServiceException` "Error executing cmdlet". Decoding the JSON first also undoes escapes such as `\u0027`
/// (.NET's encoder writes "couldn't" that way), which a scan of the raw bytes would miss.
fn error_texts(body: &[u8]) -> String {
    fn collect(value: &Value, out: &mut String) {
        match value {
            Value::String(text) => {
                out.push_str(text);
                out.push('\n');
            }
            Value::Array(items) => items.iter().for_each(|item| collect(item, out)),
            Value::Object(map) => map.values().for_each(|item| collect(item, out)),
            _ => {}
        }
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => {
            let mut out = String::new();
            collect(&value, &mut out);
            out
        }
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    }
}

/// Classifies a failed `InvokeCommand` answer by its status and the exception names anywhere in its body (every
/// message and type field, at any depth: see [`error_texts`]). Not-found is recognised as HTTP 400 or 404 naming
/// `ManagementObjectNotFoundException` or saying "couldn't be found", and as a bare 404 naming no other exception.
pub fn classify(status: u16, body: &[u8]) -> ExchangeErrorKind {
    let text = error_texts(body);
    let has = |needle: &str| text.contains(needle);
    if matches!(status, 429 | 503 | 504) || super::retry::is_exchange_transient(status, body) {
        ExchangeErrorKind::Transient
    } else if has("ProxyAddressExistsException")
        || has("is already being used by the proxy addresses")
    {
        ExchangeErrorKind::AddressInUse
    } else if has("ADObjectAlreadyExistsException")
        || has("NameNotUniqueException")
        || has("is already being used. Please try another name")
    {
        ExchangeErrorKind::NameInUse
    } else if has("ManagementObjectNotFoundException")
        || has("couldn't be found")
        || has("could not be found")
        || (status == 404 && !has("TenantNotFoundException"))
    {
        ExchangeErrorKind::NotFound
    } else if matches!(status, 401 | 403)
        || has("UnauthorizedAccessException")
        || has("AccessDenied")
    {
        ExchangeErrorKind::Permission
    } else if has("ParameterBindingException")
        || has("DataValidationException")
        || has("ArgumentException")
    {
        ExchangeErrorKind::InvalidParameter
    } else {
        ExchangeErrorKind::Other
    }
}

/// The most specific human message of an Exchange error body: the text of `error.details[0].message`
/// (`"ExNNNNNN|Type|text"`), then `innererror.internalexception.message`, `innererror.message`, `error.message`,
/// each without its `|Type|` prefix, skipping the generic "Error executing cmdlet" while a better one exists.
fn error_message(response: &ApiResponse) -> String {
    let Ok(body) = response.json::<Value>() else {
        return response.body_excerpt();
    };
    let error = &body["error"];
    let candidates = [
        &error["details"][0]["message"],
        &error["innererror"]["internalexception"]["message"],
        &error["innererror"]["message"],
        &error["message"],
    ];
    let texts: Vec<String> = candidates
        .into_iter()
        .filter_map(Value::as_str)
        .map(|text| text.rsplit('|').next().unwrap_or(text).trim().to_owned())
        .filter(|text| !text.is_empty())
        .collect();
    texts
        .iter()
        .find(|text| !text.eq_ignore_ascii_case("Error executing cmdlet"))
        .or(texts.first())
        .cloned()
        .unwrap_or_else(|| response.body_excerpt())
}

/// Quotes a value for an OPATH filter string: single quotes, inner quotes doubled.
pub fn opath_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Ids `-or`ed into one `Get-Recipient` filter: 50 keep a filter near 3,000 characters, well under the length
/// Exchange accepts [unverified: the OPATH length limit is not documented].
pub const IDS_PER_FILTER: usize = 50;

/// One recipient's hidden flag, keyed by its Entra object id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientFlag {
    /// `ExternalDirectoryObjectId` (the Entra user or contact id), lowercase.
    pub id: String,
    /// `HiddenFromAddressListsEnabled`.
    pub hidden: bool,
    /// `RecipientTypeDetails` (`UserMailbox`, `SharedMailbox`, `MailUser`, `GuestMailUser`, `MailContact`, ...).
    pub kind: String,
}

impl RecipientFlag {
    /// The flag of one `Get-Recipient` object; `None` without an `ExternalDirectoryObjectId` (objects Entra does not
    /// know, such as some system mailboxes).
    fn from_recipient(object: &Value) -> Option<RecipientFlag> {
        let id = object
            .get("ExternalDirectoryObjectId")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())?;
        // [unverified] the JSON gives booleans as JSON booleans; "True"/"False" text is accepted too.
        let hidden = match object.get("HiddenFromAddressListsEnabled") {
            Some(Value::Bool(hidden)) => *hidden,
            Some(Value::String(text)) => text.eq_ignore_ascii_case("true"),
            _ => false,
        };
        let kind = object
            .get("RecipientTypeDetails")
            .or_else(|| object.get("RecipientType"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Some(RecipientFlag {
            id: id.to_ascii_lowercase(),
            hidden,
            kind,
        })
    }
}

/// The `Get-Recipient` filters of [`ExchangeClient::recipient_flags`]: `(WhenChangedUTC -ge '…') -or
/// (ExternalDirectoryObjectId -eq '…') -or …`, ids in batches of [`IDS_PER_FILTER`], the date in the first one.
pub fn recipient_flag_filters(
    changed_since: Option<chrono::DateTime<chrono::Utc>>,
    ids: &[String],
) -> Vec<String> {
    // [unverified] WhenChangedUTC compared with an ISO 8601 UTC text (`yyyy-MM-ddTHH:mm:ssZ`): Exchange parses OPATH
    // dates with the server culture; the invariant ISO form is the one documented for filterable date properties.
    let since = changed_since.map(|moment| {
        format!(
            "(WhenChangedUTC -ge {})",
            opath_quote(&moment.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        )
    });
    let mut filters = Vec::new();
    let mut chunks = ids.chunks(IDS_PER_FILTER);
    let mut first = since;
    loop {
        let chunk = chunks.next();
        let mut terms: Vec<String> = first.take().into_iter().collect();
        if let Some(chunk) = chunk {
            terms.extend(
                chunk
                    .iter()
                    .map(|id| format!("(ExternalDirectoryObjectId -eq {})", opath_quote(id))),
            );
        }
        if terms.is_empty() {
            break;
        }
        filters.push(terms.join(" -or "));
        if chunk.is_none() {
            break;
        }
    }
    filters
}

/// Fields of `New-MailContact` (Name and ExternalEmailAddress are mandatory; Name ≤ 64 chars and unique).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewMailContact {
    pub name: String,
    pub external_email_address: String,
    pub display_name: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub initials: Option<String>,
    pub alias: Option<String>,
}

/// An Exchange `InvokeCommand` client for one tenant. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ExchangeClient {
    api: ApiClient,
    endpoint: Url,
    anchor_mailbox: String,
}

impl ExchangeClient {
    /// A client for tenant `tenant` (GUID or initial domain) at `exchange_base` (e.g. `https://outlook.office365.com/`);
    /// `initial_domain` (`contoso.onmicrosoft.com`) forms the anchor mailbox header.
    pub fn new(
        api: ApiClient,
        exchange_base: &Url,
        tenant: &str,
        initial_domain: &str,
    ) -> Result<Self, ExchangeError> {
        let mut base = exchange_base.clone();
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        let endpoint = base
            .join(&format!(
                "adminapi/beta/{}/InvokeCommand",
                super::graph::segment(tenant)
            ))
            .map_err(|error| ExchangeError::BadUrl(error.to_string()))?;
        Ok(Self {
            api,
            endpoint,
            anchor_mailbox: format!("UPN:{ANCHOR_SYSTEM_MAILBOX}@{initial_domain}"),
        })
    }

    /// A clone counting into `counters`.
    pub fn with_counters(&self, counters: Arc<RequestCounters>) -> Self {
        let mut clone = self.clone();
        clone.api = clone.api.with_counters(counters);
        clone
    }

    /// The executor (counters, retry policy).
    pub fn api(&self) -> &ApiClient {
        &self.api
    }

    /// Runs `cmdlet` with `parameters` and returns every result object (all pages). `read_only` cmdlets may be resent
    /// after a dropped connection; others are not (a resent `New-MailContact` could have applied already).
    pub async fn invoke(
        &self,
        cmdlet: &str,
        parameters: Value,
        read_only: bool,
    ) -> Result<Vec<Value>, ExchangeError> {
        let mut results = Vec::new();
        self.invoke_each(cmdlet, parameters, read_only, &mut |value| {
            results.push(value)
        })
        .await?;
        Ok(results)
    }

    /// Runs `cmdlet` like [`ExchangeClient::invoke`], handing each result object to `each` as its page arrives: a
    /// listing of a large tenant is cut down page by page instead of held whole.
    pub async fn invoke_each(
        &self,
        cmdlet: &str,
        parameters: Value,
        read_only: bool,
        each: &mut (dyn FnMut(Value) + Send),
    ) -> Result<(), ExchangeError> {
        let body = json!({"CmdletInput": {"CmdletName": cmdlet, "Parameters": parameters}});
        let mut url = self.endpoint.clone();
        loop {
            let request = ApiRequest::new(Method::POST, url.clone())
                .json(&body)
                .idempotent(read_only)
                .header("X-AnchorMailbox", self.anchor_mailbox.clone())
                .header("X-ResponseFormat", "json")
                .header("X-CmdletName", cmdlet)
                .header("Prefer", "odata.maxpagesize=1000")
                .header("Accept", "application/json");
            let response = self.api.send(request).await?;
            if !response.is_success() {
                let status = response.status.as_u16();
                return Err(ExchangeError::Command {
                    cmdlet: cmdlet.to_owned(),
                    kind: classify(status, &response.body),
                    status,
                    message: error_message(&response),
                });
            }
            if response.body.is_empty() {
                return Ok(());
            }
            let mut page: Value = response.json().map_err(|error| ExchangeError::Decode {
                cmdlet: cmdlet.to_owned(),
                message: error.to_string(),
            })?;
            let next = page
                .get("@odata.nextLink")
                .and_then(Value::as_str)
                .map(str::to_owned);
            match page.get_mut("value").map(Value::take) {
                Some(Value::Array(items)) => items.into_iter().for_each(&mut *each),
                // [unverified] a cmdlet without output may answer without `value`.
                None | Some(Value::Null) => {}
                Some(other) => each(other),
            }
            match next {
                Some(next) => {
                    let next = Url::parse(&next)
                        .map_err(|error| ExchangeError::BadUrl(error.to_string()))?;
                    // A nextLink to another host is refused (allowlist), never followed with our token.
                    self.api.check_allowed(&next)?;
                    url = next;
                }
                None => return Ok(()),
            }
        }
    }

    /// Every mail contact galbridge manages: `CustomAttribute{n} -like 'galbridge:*'`.
    pub async fn managed_mail_contacts(&self, attribute: u8) -> Result<Vec<Value>, ExchangeError> {
        let filter = format!(
            "CustomAttribute{attribute} -like {}",
            opath_quote(&format!("{ANCHOR_PREFIX}*"))
        );
        self.invoke(
            "Get-MailContact",
            json!({"Filter": filter, "ResultSize": "Unlimited"}),
            true,
        )
        .await
    }

    /// The mail contact carrying `anchor` in `CustomAttribute{n}`, if any.
    pub async fn mail_contact_by_anchor(
        &self,
        attribute: u8,
        anchor: &str,
    ) -> Result<Option<Value>, ExchangeError> {
        let filter = format!("CustomAttribute{attribute} -eq {}", opath_quote(anchor));
        let found = self
            .invoke(
                "Get-MailContact",
                json!({"Filter": filter, "ResultSize": "Unlimited"}),
                true,
            )
            .await?;
        Ok(found.into_iter().next())
    }

    /// Every recipient hidden from the address lists (`Get-Recipient -Filter "HiddenFromAddressListsEnabled -eq
    /// $true" -ResultSize Unlimited`, all pages), as [`RecipientFlag`]s. docs/microsoft-facts.md, "Hidden from address
    /// lists": Exchange's flag is the truth; Graph's `showInAddressList` is not kept in step with it.
    pub async fn hidden_recipients(&self) -> Result<Vec<RecipientFlag>, ExchangeError> {
        let found = self
            .invoke(
                "Get-Recipient",
                json!({
                    "Filter": "HiddenFromAddressListsEnabled -eq $true",
                    "ResultSize": "Unlimited"
                }),
                true,
            )
            .await?;
        Ok(found
            .iter()
            .filter_map(RecipientFlag::from_recipient)
            .collect())
    }

    /// The hidden flags of the recipients whose Entra id is in `ids` (batches of [`IDS_PER_FILTER`] `-or`ed
    /// `ExternalDirectoryObjectId -eq '…'`), plus, when `changed_since` is given, of every recipient whose
    /// `WhenChangedUTC` is at or after it (in the first batch: a call with no id costs one request). People
    /// without a recipient (no mailbox) are simply absent from the answer.
    pub async fn recipient_flags(
        &self,
        changed_since: Option<chrono::DateTime<chrono::Utc>>,
        ids: &[String],
    ) -> Result<Vec<RecipientFlag>, ExchangeError> {
        let mut flags = Vec::new();
        for filter in recipient_flag_filters(changed_since, ids) {
            let found = self
                .invoke(
                    "Get-Recipient",
                    json!({
                        "Filter": filter,
                        "ResultSize": "Unlimited",
                    }),
                    true,
                )
                .await?;
            flags.extend(found.iter().filter_map(RecipientFlag::from_recipient));
        }
        Ok(flags)
    }

    /// The mail contact whose primary address is `address` (Identity accepts an SMTP address), if any.
    pub async fn mail_contact_by_address(
        &self,
        address: &str,
    ) -> Result<Option<Value>, ExchangeError> {
        self.get_by_identity("Get-MailContact", address).await
    }

    /// Who owns `address` (mailbox, group, guest, contact), if anyone: `Get-Recipient -Identity`.
    pub async fn recipient_by_address(
        &self,
        address: &str,
    ) -> Result<Option<Value>, ExchangeError> {
        self.get_by_identity("Get-Recipient", address).await
    }

    /// The one object `cmdlet -Identity identity` answers, if any: not-found (HTTP 400 or 404, in any error shape)
    /// and a 200 without objects both mean "none".
    pub async fn get_by_identity(
        &self,
        cmdlet: &str,
        identity: &str,
    ) -> Result<Option<Value>, ExchangeError> {
        match self
            .invoke(cmdlet, json!({"Identity": identity}), true)
            .await
        {
            Ok(found) => Ok(found.into_iter().next()),
            Err(error) if error.kind() == Some(ExchangeErrorKind::NotFound) => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// `New-MailContact`; returns the created contact. (It cannot set CustomAttributeN: anchor with `set_mail_contact`.)
    pub async fn new_mail_contact(&self, contact: &NewMailContact) -> Result<Value, ExchangeError> {
        let mut parameters = Map::new();
        parameters.insert("Name".into(), json!(contact.name));
        parameters.insert(
            "ExternalEmailAddress".into(),
            json!(smtp(&contact.external_email_address)),
        );
        let optional = [
            ("DisplayName", &contact.display_name),
            ("FirstName", &contact.first_name),
            ("LastName", &contact.last_name),
            ("Initials", &contact.initials),
            ("Alias", &contact.alias),
        ];
        for (name, value) in optional {
            if let Some(value) = value.as_ref().filter(|value| !value.is_empty()) {
                parameters.insert(name.into(), json!(value));
            }
        }
        let created = self
            .invoke("New-MailContact", Value::Object(parameters), false)
            .await?;
        created
            .into_iter()
            .next()
            .ok_or_else(|| ExchangeError::Decode {
                cmdlet: "New-MailContact".into(),
                message: "no contact in the answer".into(),
            })
    }

    /// `Set-MailContact -Identity … ` with `parameters` (e.g. `CustomAttribute15`, `DisplayName`, `Name`,
    /// `ExternalEmailAddress`, `HiddenFromAddressListsEnabled`).
    pub async fn set_mail_contact(
        &self,
        identity: &str,
        parameters: Map<String, Value>,
    ) -> Result<(), ExchangeError> {
        self.set("Set-MailContact", identity, parameters).await
    }

    /// `Set-Contact -Identity …` with `parameters` (`Title`, `Department`, `Company`, `Office`, `Phone`, `MobilePhone`,
    /// `HomePhone`, `Fax`, `StreetAddress`, `City`, `StateOrProvince`, `PostalCode`, `CountryOrRegion`, `Notes`, …).
    pub async fn set_contact(
        &self,
        identity: &str,
        parameters: Map<String, Value>,
    ) -> Result<(), ExchangeError> {
        self.set("Set-Contact", identity, parameters).await
    }

    /// Hides (or shows) a mail contact in the address lists (`on_delete = "hide"`).
    pub async fn set_hidden(&self, identity: &str, hidden: bool) -> Result<(), ExchangeError> {
        let mut parameters = Map::new();
        parameters.insert("HiddenFromAddressListsEnabled".into(), json!(hidden));
        self.set("Set-MailContact", identity, parameters).await
    }

    /// Shows (or hides) a guest in the address lists: `Set-MailUser -HiddenFromAddressListsEnabled` (Graph's
    /// `showInAddressList` cannot be written any more, docs/microsoft-facts.md §5). `Ok(false)` when Exchange does
    /// not know the guest as a mail user yet (replication after the invitation).
    pub async fn set_mail_user_hidden(
        &self,
        identity: &str,
        hidden: bool,
    ) -> Result<bool, ExchangeError> {
        let mut parameters = Map::new();
        parameters.insert("HiddenFromAddressListsEnabled".into(), json!(hidden));
        match self.set("Set-MailUser", identity, parameters).await {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == Some(ExchangeErrorKind::NotFound) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// `Remove-MailContact -Identity … -Confirm:$false`. Removing a contact that is already gone succeeds.
    pub async fn remove_mail_contact(&self, identity: &str) -> Result<(), ExchangeError> {
        match self
            .invoke(
                "Remove-MailContact",
                json!({"Identity": identity, "Confirm": false}),
                false,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(error) if error.kind() == Some(ExchangeErrorKind::NotFound) => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn set(
        &self,
        cmdlet: &str,
        identity: &str,
        mut parameters: Map<String, Value>,
    ) -> Result<(), ExchangeError> {
        if parameters.is_empty() {
            return Ok(());
        }
        parameters.insert("Identity".into(), json!(identity));
        // Setting the same values twice is harmless, so Set-* may be resent after a dropped connection.
        self.invoke(cmdlet, Value::Object(parameters), true)
            .await
            .map(|_| ())
    }
}

/// `SMTP:`-prefixes a bare address (ExternalEmailAddress takes a proxy address form).
fn smtp(address: &str) -> String {
    if address.contains(':') {
        address.to_owned()
    } else {
        format!("SMTP:{address}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified_by_exception_names() {
        let body = |exception: &str| {
            format!(
                r#"{{"error":{{"code":"BadRequest","message":"|{exception}|x","innererror":{{"type":"{exception}"}}}}}}"#
            )
        };
        let cases = [
            (
                400,
                "Microsoft.Exchange.Data.Directory.ProxyAddressExistsException",
                ExchangeErrorKind::AddressInUse,
            ),
            (
                400,
                "Microsoft.Exchange.Data.Directory.ADObjectAlreadyExistsException",
                ExchangeErrorKind::NameInUse,
            ),
            (
                400,
                "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
                ExchangeErrorKind::NotFound,
            ),
            (
                500,
                "Microsoft.Exchange.Net.ServerBusyException",
                ExchangeErrorKind::Transient,
            ),
            (
                400,
                "Microsoft.Exchange.Net.ServerBusyException",
                ExchangeErrorKind::Transient,
            ),
            (
                403,
                "System.UnauthorizedAccessException",
                ExchangeErrorKind::Permission,
            ),
            (
                400,
                "System.Management.Automation.ParameterBindingException",
                ExchangeErrorKind::InvalidParameter,
            ),
            (400, "Some.Other.Exception", ExchangeErrorKind::Other),
        ];
        for (status, exception, expected) in cases {
            assert_eq!(
                classify(status, body(exception).as_bytes()),
                expected,
                "{exception}"
            );
        }
    }

    /// The shape where the exception is only in `details[0].message` and `innererror.internalexception.type`, under
    /// a generic ODataServiceException "Error executing cmdlet" (docs/microsoft-facts.md, "Exchange errors").
    fn details_shape(exception: &str, text: &str) -> String {
        serde_json::json!({"error": {
            "code": "BadRequest",
            "message": "Error executing cmdlet",
            "details": [{"code": "Context", "target": "", "message": format!("Ex6F9304|{exception}|{text}")}],
            "innererror": {
                "message": "Error executing cmdlet",
                "type": "Microsoft.Exchange.Admin.OData.Core.ODataServiceException",
                "internalexception": {"message": text, "type": exception}
            }
        }})
        .to_string()
    }

    #[test]
    fn errors_are_classified_in_either_shape_and_either_not_found_status() {
        let not_found = "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException";
        let text = "The operation couldn't be performed because object 'ada@acme.example' couldn't be found on 'X'.";
        for status in [400, 404] {
            assert_eq!(
                classify(status, details_shape(not_found, text).as_bytes()),
                ExchangeErrorKind::NotFound,
                "details shape, HTTP {status}"
            );
        }
        let escaped = r#"{"error":{"code":"NotFound","message":"The object couldn't be found."}}"#;
        assert_eq!(
            classify(404, escaped.as_bytes()),
            ExchangeErrorKind::NotFound
        );
        assert_eq!(
            classify(
                404,
                br#"{"error":{"message":"|Microsoft.Exchange.Data.Directory.TenantNotFoundException|no tenant"}}"#
            ),
            ExchangeErrorKind::Other,
            "a missing tenant is not a missing object"
        );
        let cases = [
            (
                "Microsoft.Exchange.Data.Directory.ProxyAddressExistsException",
                ExchangeErrorKind::AddressInUse,
            ),
            (
                "Microsoft.Exchange.Data.Directory.ADObjectAlreadyExistsException",
                ExchangeErrorKind::NameInUse,
            ),
            (
                "Microsoft.Exchange.Net.ServerBusyException",
                ExchangeErrorKind::Transient,
            ),
        ];
        for (exception, expected) in cases {
            assert_eq!(
                classify(400, details_shape(exception, "x").as_bytes()),
                expected,
                "{exception}"
            );
        }
        assert_eq!(
            classify(
                429,
                details_shape("System.Exception", "Too many requests. Retry later.").as_bytes()
            ),
            ExchangeErrorKind::Transient
        );
    }

    #[test]
    fn the_message_is_the_most_specific_text_in_either_shape() {
        let answer = |body: String, status: u16| ApiResponse {
            status: reqwest::StatusCode::from_u16(status).unwrap(),
            headers: Default::default(),
            body: body.into_bytes(),
            url: "https://outlook.test/".parse().unwrap(),
        };
        let text =
            "The operation couldn't be performed because object 'c9' couldn't be found on 'X'.";
        let details = answer(
            details_shape(
                "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
                text,
            ),
            404,
        );
        assert_eq!(error_message(&details), text);
        let message_shape = answer(
            format!(
                r#"{{"error":{{"code":"BadRequest","message":"|Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException|{text}"}}}}"#
            ),
            400,
        );
        assert_eq!(error_message(&message_shape), text);
    }

    #[test]
    fn recipient_flag_filters_put_the_date_in_the_first_batch() {
        let since = chrono::DateTime::parse_from_rfc3339("2026-12-06T10:45:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            recipient_flag_filters(Some(since), &[]),
            vec!["(WhenChangedUTC -ge '2026-12-06T10:45:00Z')".to_owned()]
        );
        assert_eq!(
            recipient_flag_filters(Some(since), &["a".into(), "o'b".into()]),
            vec![
                "(WhenChangedUTC -ge '2026-12-06T10:45:00Z') -or (ExternalDirectoryObjectId -eq 'a') -or (ExternalDirectoryObjectId -eq 'o''b')"
                    .to_owned()
            ]
        );
        let ids: Vec<String> = (0..120).map(|i| format!("id{i}")).collect();
        let filters = recipient_flag_filters(None, &ids);
        assert_eq!(filters.len(), 3);
        assert_eq!(filters[0].matches(" -or ").count(), IDS_PER_FILTER - 1);
        assert!(filters[2].ends_with("(ExternalDirectoryObjectId -eq 'id119')"));
        assert!(recipient_flag_filters(None, &[]).is_empty());
    }

    #[test]
    fn recipient_flags_read_the_entra_id_and_the_flag() {
        let flag = RecipientFlag::from_recipient(&json!({"ExternalDirectoryObjectId": "ABC",
            "HiddenFromAddressListsEnabled": true, "RecipientTypeDetails": "UserMailbox"}));
        assert_eq!(
            flag,
            Some(RecipientFlag {
                id: "abc".into(),
                hidden: true,
                kind: "UserMailbox".into()
            })
        );
        let text = RecipientFlag::from_recipient(
            &json!({"ExternalDirectoryObjectId": "x", "HiddenFromAddressListsEnabled": "False"}),
        );
        assert_eq!(text.map(|f| f.hidden), Some(false));
        assert_eq!(
            RecipientFlag::from_recipient(&json!({"Name": "system"})),
            None
        );
    }

    #[test]
    fn opath_values_are_quoted_safely() {
        assert_eq!(opath_quote("galbridge:t:o'brien"), "'galbridge:t:o''brien'");
        assert_eq!(smtp("ada@acme.example"), "SMTP:ada@acme.example");
        assert_eq!(smtp("SMTP:ada@acme.example"), "SMTP:ada@acme.example");
    }
}
