//! Entity group transactions (`POST /$batch`): one `multipart/mixed` request holding one change set of up to 100
//! operations on entities of a single partition, applied all-or-nothing
//! (https://learn.microsoft.com/rest/api/storageservices/performing-entity-group-transactions).
//!
//! Quirks: every sub-request carries the entity's absolute URL; the whole payload must stay under 4 MiB; a failing
//! operation fails the change set and the response holds a single sub-response with its status (a `DELETE` of an
//! entity that is not there fails the whole set with 404, which the store handles by falling back to single deletes).

use serde_json::{Map, Value};

/// Operations per change set, and the payload budget (the service caps at 100 and 4 MiB).
pub(super) const MAX_OPERATIONS: usize = 100;
pub(super) const MAX_PAYLOAD_BYTES: usize = 3 * 1024 * 1024 + 512 * 1024;

/// One operation in a change set.
#[derive(Debug, Clone)]
pub(super) enum BatchOperation {
    /// Insert or replace (PUT without `If-Match`).
    Upsert {
        entity_url: String,
        entity: Map<String, Value>,
    },
    /// Delete whatever version is there (`If-Match: *`).
    Delete { entity_url: String },
}

impl BatchOperation {
    /// A rough size of the operation in the payload, for splitting change sets under the 4 MiB limit.
    pub(super) fn payload_size(&self) -> usize {
        match self {
            Self::Upsert { entity_url, entity } => {
                entity_url.len() + 256 + serde_json::to_string(entity).map_or(0, |body| body.len())
            }
            Self::Delete { entity_url } => entity_url.len() + 256,
        }
    }
}

/// Splits operations into change sets that respect both the count and the payload limits.
pub(super) fn split_into_change_sets(operations: Vec<BatchOperation>) -> Vec<Vec<BatchOperation>> {
    let mut sets = Vec::new();
    let mut current = Vec::new();
    let mut current_size = 0;
    for operation in operations {
        let size = operation.payload_size();
        if !current.is_empty()
            && (current.len() == MAX_OPERATIONS || current_size + size > MAX_PAYLOAD_BYTES)
        {
            sets.push(std::mem::take(&mut current));
            current_size = 0;
        }
        current_size += size;
        current.push(operation);
    }
    if !current.is_empty() {
        sets.push(current);
    }
    sets
}

/// Builds the multipart body; returns (content type, body).
pub(super) fn build_body(operations: &[BatchOperation], batch_id: &str) -> (String, String) {
    let batch = format!("batch_{batch_id}");
    let changeset = format!("changeset_{batch_id}");
    let mut body = String::new();
    body.push_str(&format!(
        "--{batch}\r\nContent-Type: multipart/mixed; boundary={changeset}\r\n\r\n"
    ));
    for (index, operation) in operations.iter().enumerate() {
        body.push_str(&format!(
            "--{changeset}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n"
        ));
        match operation {
            BatchOperation::Upsert { entity_url, entity } => {
                let json = Value::Object(entity.clone()).to_string();
                body.push_str(&format!(
                    "PUT {entity_url} HTTP/1.1\r\nContent-ID: {index}\r\nContent-Type: application/json\r\n\
                     Accept: application/json;odata=nometadata\r\nPrefer: return-no-content\r\n\
                     Content-Length: {}\r\n\r\n{json}\r\n",
                    json.len()
                ));
            }
            BatchOperation::Delete { entity_url } => {
                body.push_str(&format!(
                    "DELETE {entity_url} HTTP/1.1\r\nContent-ID: {index}\r\n\
                     Accept: application/json;odata=nometadata\r\nIf-Match: *\r\n\r\n"
                ));
            }
        }
    }
    body.push_str(&format!("--{changeset}--\r\n--{batch}--\r\n"));
    (format!("multipart/mixed; boundary={batch}"), body)
}

/// The first failed sub-response of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FailedOperation {
    pub status: u16,
    pub code: String,
    pub message: String,
}

/// Reads the sub-responses' status lines; `Ok(())` when every one is 2xx, else the first failure.
/// An answer with no status line at all is reported as a failure too (never assumed applied).
pub(super) fn check_response(body: &str) -> Result<(), FailedOperation> {
    let mut seen = 0;
    let mut lines = body.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("HTTP/1.1 ") else {
            continue;
        };
        seen += 1;
        let status: u16 = rest
            .split_whitespace()
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if (200..300).contains(&status) {
            continue;
        }
        // The sub-response's body follows its headers and a blank line: an OData error object.
        let mut json = String::new();
        for header in lines.by_ref() {
            if header.trim().is_empty() {
                break;
            }
        }
        for body_line in lines.by_ref() {
            if body_line.starts_with("--") {
                break;
            }
            json.push_str(body_line);
        }
        let (code, message) = super::odata::parse_odata_error(&json);
        return Err(FailedOperation {
            status,
            code,
            message,
        });
    }
    if seen == 0 {
        return Err(FailedOperation {
            status: 0,
            code: "NoSubResponses".to_owned(),
            message: "the batch answer held no sub-response".to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(n: usize, bytes: usize) -> BatchOperation {
        let mut entity = Map::new();
        entity.insert("PartitionKey".into(), "p".into());
        entity.insert("RowKey".into(), format!("r{n}").into());
        entity.insert("data".into(), "x".repeat(bytes).into());
        BatchOperation::Upsert {
            entity_url: format!("http://h/t(PartitionKey='p',RowKey='r{n}')"),
            entity,
        }
    }

    #[test]
    fn change_sets_respect_count_and_payload_limits() {
        let sets = split_into_change_sets((0..250).map(|n| upsert(n, 10)).collect());
        assert_eq!(
            sets.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![100, 100, 50]
        );

        let big = split_into_change_sets((0..10).map(|n| upsert(n, 900_000)).collect());
        assert!(big.len() >= 3);
        for set in &big {
            assert!(
                set.iter().map(BatchOperation::payload_size).sum::<usize>() <= MAX_PAYLOAD_BYTES
            );
        }
        assert_eq!(big.iter().map(Vec::len).sum::<usize>(), 10);
    }

    #[test]
    fn a_failed_sub_response_is_reported_with_its_code() {
        let answer = "--batchresponse_1\r\nContent-Type: multipart/mixed; boundary=changesetresponse_1\r\n\r\n\
            --changesetresponse_1\r\nContent-Type: application/http\r\n\r\n\
            HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\r\n\
            {\"odata.error\":{\"code\":\"ResourceNotFound\",\"message\":{\"lang\":\"en-US\",\"value\":\"gone\"}}}\r\n\
            --changesetresponse_1--\r\n--batchresponse_1--\r\n";
        let failed = check_response(answer).unwrap_err();
        assert_eq!(failed.status, 404);
        assert_eq!(failed.code, "ResourceNotFound");
        assert_eq!(failed.message, "gone");
        assert!(
            check_response("HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 204 No Content\r\n").is_ok()
        );
        assert!(check_response("garbage").is_err());
    }
}
