//! The `$batch` wire format: reading the request envelope and writing inner responses as JSON bytes.
//!
//! Reading has two paths that must agree. The fast one is typed (serde-derive) and borrows from the request bytes:
//! inner bodies stay raw JSON (`&RawValue`) and travel on to the inner request as a slice of the outer body, never
//! re-serialised. It accepts only the common, well-typed shape (objects, string ids, string headers). Anything else
//! (numeric ids, non-string headers or `dependsOn` entries, duplicate keys, invalid JSON) falls back to the lenient
//! path over a `serde_json::Value`, which is the reference for what the simulator accepts and which error it gives.
//! Both feed one validation, so the error messages are the same whichever path read the envelope.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use axum::body::Bytes;
use axum::http::Method;
use serde::de::value::MapAccessDeserializer;
use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use serde_json::value::RawValue;

pub(super) const MAX_REQUESTS: usize = 20;

/// An inner request's body as the envelope held it: raw JSON text.
pub(super) enum RawBody<'a> {
    /// A slice of the outer request's bytes (fast path).
    Borrowed(&'a RawValue),
    /// Re-serialised from the parsed envelope (lenient path).
    Owned(Box<RawValue>),
}

impl RawBody<'_> {
    pub(super) fn json_text(&self) -> &str {
        match self {
            RawBody::Borrowed(raw) => raw.get(),
            RawBody::Owned(raw) => raw.get(),
        }
    }
}

/// One validated inner request.
pub(super) struct Inner<'a> {
    pub(super) id: String,
    pub(super) method: Method,
    pub(super) url: String,
    /// Only the string-valued headers, in the order the simulator has always applied them (sorted by name; a
    /// repeated name keeps its last value, as in a JSON object read into a map).
    pub(super) headers: BTreeMap<String, String>,
    pub(super) body: Option<RawBody<'a>>,
    pub(super) depends_on: Vec<String>,
}

/// One inner request as read, before validation.
struct Unchecked<'a> {
    id: Option<String>,
    method: Option<String>,
    url: Option<String>,
    depends_on: Vec<String>,
    headers: BTreeMap<String, String>,
    body: Option<RawBody<'a>>,
}

/// Reads and validates the envelope; the error is the message of Graph's 400 `BadRequest`.
pub(super) fn parse(body: &Bytes) -> Result<Vec<Inner<'_>>, String> {
    let unchecked = match fast(body) {
        Some(requests) => requests,
        None => lenient(body)?,
    };
    validate(unchecked)
}

#[derive(Deserialize)]
struct FastEnvelope<'a> {
    #[serde(borrow)]
    requests: Option<Vec<ObjectOnly<FastRequest<'a>>>>,
}

#[derive(Deserialize)]
struct FastRequest<'a> {
    id: Option<String>,
    method: Option<String>,
    url: Option<String>,
    #[serde(rename = "dependsOn")]
    depends_on: Option<Vec<String>>,
    headers: Option<BTreeMap<String, String>>,
    /// `"body": null` is a body (the JSON `null`), not an absent one.
    #[serde(borrow, default, deserialize_with = "present")]
    body: Option<&'a RawValue>,
}

fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

fn fast(body: &Bytes) -> Option<Vec<Unchecked<'_>>> {
    let envelope: ObjectOnly<FastEnvelope<'_>> = serde_json::from_slice(body).ok()?;
    let requests = envelope.0.requests?;
    Some(
        requests
            .into_iter()
            .map(|ObjectOnly(r)| Unchecked {
                id: r.id,
                method: r.method,
                url: r.url,
                depends_on: r.depends_on.unwrap_or_default(),
                headers: r.headers.unwrap_or_default(),
                body: r.body.map(RawBody::Borrowed),
            })
            .collect(),
    )
}

/// The reference reading over a `Value`: wrong types are treated as absent, non-string entries are skipped.
fn lenient(body: &Bytes) -> Result<Vec<Unchecked<'static>>, String> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| "Invalid batch payload format.".to_string())?;
    let requests = v
        .get("requests")
        .and_then(Value::as_array)
        .ok_or("Invalid batch payload format: 'requests' is required.")?;
    check_count(requests.len())?;
    requests
        .iter()
        .map(|r| {
            let id = match r.get("id") {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            };
            let text = |key: &str| r.get(key).and_then(Value::as_str).map(str::to_string);
            let body = match r.get("body") {
                None => None,
                Some(b) => Some(RawBody::Owned(
                    serde_json::value::to_raw_value(b)
                        .map_err(|_| "Invalid batch payload format.".to_string())?,
                )),
            };
            Ok(Unchecked {
                id,
                method: text("method"),
                url: text("url"),
                depends_on: r
                    .get("dependsOn")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|d| d.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default(),
                headers: r
                    .get("headers")
                    .and_then(Value::as_object)
                    .map(|h| {
                        h.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                            .collect()
                    })
                    .unwrap_or_default(),
                body,
            })
        })
        .collect()
}

fn check_count(n: usize) -> Result<(), String> {
    if n > MAX_REQUESTS {
        return Err(format!(
            "Invalid batch payload format: the number of requests ({n}) exceeds the limit of {MAX_REQUESTS}."
        ));
    }
    Ok(())
}

/// Request by request, in order: id, unique id, method, url, dependencies on earlier requests.
fn validate(requests: Vec<Unchecked<'_>>) -> Result<Vec<Inner<'_>>, String> {
    check_count(requests.len())?;
    let mut out: Vec<Inner<'_>> = Vec::with_capacity(requests.len());
    for r in requests {
        let id = r.id.ok_or("Each request needs an id.")?;
        if out.iter().any(|o| o.id == id) {
            return Err(format!("Request id '{id}' is not unique in the batch."));
        }
        let method = r
            .method
            .and_then(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
            .ok_or("Each request needs a method.")?;
        let url = r.url.ok_or("Each request needs a url.")?;
        for d in &r.depends_on {
            if !out.iter().any(|o| o.id == *d) {
                return Err(format!(
                    "Request '{id}' depends on '{d}', which is not an earlier request of the batch."
                ));
            }
        }
        out.push(Inner {
            id,
            method,
            url,
            headers: r.headers,
            body: r.body,
            depends_on: r.depends_on,
        });
    }
    Ok(out)
}

/// Deserialises `T` from a JSON object only. serde-derive structs also accept a JSON array (fields by position),
/// which the lenient path does not; refusing it here sends such envelopes to the lenient path.
struct ObjectOnly<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for ObjectOnly<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectVisitor<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(ObjectVisitor(PhantomData))
            .map(ObjectOnly)
    }
}

/// Appends one inner response object. Keys come in the order the simulator has always written them (serde_json's
/// sorted map order: body, headers, id, status); `body` is JSON text, embedded as is.
pub(super) fn write_inner_response(
    out: &mut Vec<u8>,
    id: &str,
    status: u16,
    headers: Option<&BTreeMap<String, String>>,
    body: Option<&[u8]>,
) {
    out.push(b'{');
    if let Some(body) = body {
        out.extend_from_slice(b"\"body\":");
        out.extend_from_slice(body);
        out.push(b',');
    }
    if let Some(headers) = headers {
        out.extend_from_slice(b"\"headers\":");
        write_json(out, headers);
        out.push(b',');
    }
    out.extend_from_slice(b"\"id\":");
    write_json(out, id);
    out.extend_from_slice(b",\"status\":");
    out.extend_from_slice(status.to_string().as_bytes());
    out.push(b'}');
}

fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing strings and string maps into a Vec cannot fail (no I/O, no non-string keys).
    let _ = serde_json::to_writer(&mut *out, value);
}

/// The outer response body: `{"responses":[…]}` around inner response objects already serialised.
pub(super) fn envelope(inner: &[Vec<u8>]) -> Vec<u8> {
    let len: usize = inner.iter().map(|r| r.len() + 1).sum();
    let mut out = Vec::with_capacity(len + 16);
    out.extend_from_slice(b"{\"responses\":[");
    for (i, r) in inner.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(r);
    }
    out.extend_from_slice(b"]}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a reading produced (one line per request, or the error), comparable across the two paths.
    type Reading = Result<Vec<String>, String>;

    fn summary(r: Result<Vec<Inner<'_>>, String>) -> Reading {
        r.map(|list| {
            list.iter()
                .map(|i| {
                    let body = i
                        .body
                        .as_ref()
                        .map(|b| serde_json::from_str::<Value>(b.json_text()).unwrap());
                    format!(
                        "{} {} {} {:?} {:?} {:?}",
                        i.id, i.method, i.url, i.headers, i.depends_on, body
                    )
                })
                .collect()
        })
    }

    /// The fast reading (None when it steps aside) and the lenient one.
    fn both(text: &str) -> (Option<Reading>, Reading) {
        let bytes = Bytes::copy_from_slice(text.as_bytes());
        let fast = fast(&bytes).map(|u| summary(validate(u)));
        let lenient = summary(lenient(&bytes).and_then(validate));
        (fast, lenient)
    }

    #[test]
    fn the_usual_envelope_takes_the_fast_path_and_borrows_its_bodies() {
        let text = r#"{"requests":[{"id":"1","method":"post","url":"/users/u/contacts","headers":{"Content-Type":"application/json"},"body":{ "displayName" : "A\u00e9" , "n": 1.50 }},{"id":"2","method":"GET","url":"/me","dependsOn":["1"]}]}"#;
        let bytes = Bytes::copy_from_slice(text.as_bytes());
        let requests = validate(fast(&bytes).expect("fast path")).unwrap();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].method, Method::POST);
        match &requests[0].body {
            Some(RawBody::Borrowed(raw)) => {
                // The inner body is the outer text, byte for byte.
                assert_eq!(raw.get(), r#"{ "displayName" : "A\u00e9" , "n": 1.50 }"#);
            }
            _ => panic!("body not borrowed"),
        }
        assert!(requests[1].body.is_none());
        assert_eq!(requests[1].depends_on, vec!["1".to_string()]);
        let (fast, lenient) = both(text);
        assert_eq!(fast.unwrap(), lenient);
    }

    #[test]
    fn the_fast_path_agrees_with_the_lenient_one_or_steps_aside() {
        let fast_cases = [
            r#"{"requests":[{"id":"a","method":"GET","url":"/me","body":null}]}"#,
            r#"{"requests":[{"id":"a","method":"PUT","url":"/x","headers":{"content-type":"image/jpeg","b":"c"},"body":"AAEC"}]}"#,
            r#"{"requests":[{"id":"a","method":"GET","url":"/me","headers":null,"dependsOn":null}]}"#,
            r#"{"requests":[{"id":null,"method":"GET","url":"/me"}]}"#,
            r#"{"requests":[{"id":"a","url":"/me"}]}"#,
            r#"{"requests":[{"id":"a","method":"GET"}]}"#,
            r#"{"requests":[{"id":"a","method":"G E T","url":"/me"}]}"#,
            r#"{"requests":[{"id":"a","method":"GET","url":"/me"},{"id":"a","method":"GET","url":"/me"}]}"#,
            r#"{"requests":[{"id":"a","method":"GET","url":"/me","dependsOn":["b"]},{"id":"b","method":"GET","url":"/me"}]}"#,
            r#"{"requests":[],"other":1}"#,
        ];
        for text in fast_cases {
            let (fast, lenient) = both(text);
            assert_eq!(fast.expect("fast path"), lenient, "{text}");
        }
        let lenient_cases = [
            r#"{"requests":[{"id":7,"method":"GET","url":"/me"}]}"#,
            r#"{"requests":[{"id":1.5,"method":"GET","url":"/me"}]}"#,
            r#"{"requests":[{"id":true,"method":"GET","url":"/me"}]}"#,
            r#"{"requests":[{"id":"a","method":"GET","url":"/me","headers":{"x":1,"y":"z"}}]}"#,
            r#"{"requests":[{"id":"a","method":"GET","url":"/me","dependsOn":[1]}]}"#,
            r#"{"requests":[{"id":"a","method":"GET","url":"/me","dependsOn":"a"}]}"#,
            r#"{"requests":[{"id":"a","id":"b","method":"GET","url":"/me"}]}"#,
            r#"{"requests":[["a","GET","/me"]]}"#,
            r#"{"requests":{"id":"a"}}"#,
            r#"{"requests":"no"}"#,
            r#"[[{"id":"a","method":"GET","url":"/me"}]]"#,
            r#"{}"#,
            r#"{"requests":[{"id":"a","method":"GET","url":"/me"}"#,
            "not json",
        ];
        for text in lenient_cases {
            assert!(both(text).0.is_none(), "{text}");
        }
        // The envelopes the fast path cannot read still get the lenient path's answers.
        let parse_text = |t: &str| summary(parse(&Bytes::copy_from_slice(t.as_bytes())));
        assert_eq!(
            parse_text(r#"{"requests":[{"id":7,"method":"GET","url":"/me"}]}"#).unwrap()[0],
            r#"7 GET /me {} [] None"#
        );
        assert_eq!(
            parse_text(r#"{"requests":[{"id":"a","method":"GET","url":"/me","body":null}]}"#)
                .unwrap()[0],
            r#"a GET /me {} [] Some(Null)"#
        );
        let errors = [
            (
                r#"{"requests":[["a","GET","/me"]]}"#,
                "Each request needs an id.",
            ),
            (
                r#"{"requests":"no"}"#,
                "Invalid batch payload format: 'requests' is required.",
            ),
            (
                r#"[]"#,
                "Invalid batch payload format: 'requests' is required.",
            ),
            ("not json", "Invalid batch payload format."),
            (
                r#"{"requests":[{"id":"a","url":"/me"}]}"#,
                "Each request needs a method.",
            ),
            (
                r#"{"requests":[{"id":"a","method":"GET"}]}"#,
                "Each request needs a url.",
            ),
            (
                r#"{"requests":[{"id":"a","method":"GET","url":"/me"},{"id":"a","method":"GET","url":"/me"}]}"#,
                "Request id 'a' is not unique in the batch.",
            ),
            (
                r#"{"requests":[{"id":"a","method":"GET","url":"/me","dependsOn":["b"]}]}"#,
                "Request 'a' depends on 'b', which is not an earlier request of the batch.",
            ),
        ];
        for (text, message) in errors {
            assert_eq!(parse_text(text), Err(message.to_string()), "{text}");
        }
        let many: Vec<String> = (0..21)
            .map(|i| format!(r#"{{"id":"{i}","method":"GET","url":"/me"}}"#))
            .collect();
        assert_eq!(
            parse_text(&format!(r#"{{"requests":[{}]}}"#, many.join(","))),
            Err("Invalid batch payload format: the number of requests (21) exceeds the limit of 20.".into())
        );
    }

    #[test]
    fn inner_responses_are_written_with_the_sorted_keys_serde_json_gives() {
        let headers = BTreeMap::from([
            ("Content-Type".to_string(), "application/json".to_string()),
            ("x-\"q".to_string(), "v".to_string()),
        ]);
        let mut one = Vec::new();
        write_inner_response(
            &mut one,
            "i\"d",
            201,
            Some(&headers),
            Some(br#"{"a":[1,2]}"#),
        );
        let mut two = Vec::new();
        write_inner_response(&mut two, "2", 204, Some(&BTreeMap::new()), None);
        let text = String::from_utf8(envelope(&[one, two])).unwrap();
        let as_value: Value = serde_json::from_str(&text).unwrap();
        let expected = serde_json::json!({"responses": [
            {"id": "i\"d", "status": 201, "headers": {"Content-Type": "application/json", "x-\"q": "v"}, "body": {"a": [1, 2]}},
            {"id": "2", "status": 204, "headers": {}}
        ]});
        assert_eq!(as_value, expected);
        assert_eq!(text, serde_json::to_string(&expected).unwrap());
    }
}
