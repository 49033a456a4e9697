//! Exchange's OPATH filter syntax as `Get-MailContact -Filter` / `Get-Recipient -Filter` take it:
//! `CustomAttribute15 -eq 'galbridge:…'`, `ExternalEmailAddress -like '*@acme.example'`, `-and`, `-or`, `-not`,
//! `-ne`, `-notlike`, `-gt`/`-ge`/`-lt`/`-le` (dates such as `WhenChangedUTC -ge '2026-12-06T11:00:00Z'`, numbers,
//! text), parentheses, `$true`/`$false`/`$null`. Comparisons are case-insensitive, as in Exchange.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OPath {
    And(Box<OPath>, Box<OPath>),
    Or(Box<OPath>, Box<OPath>),
    Not(Box<OPath>),
    Cmp {
        prop: String,
        op: String,
        value: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Quoted(String),
    Op(String),
    LParen,
    RParen,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        match chars[i] {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            q @ ('\'' | '"') => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated quoted value".into()),
                        Some(c) if *c == q && chars.get(i + 1) == Some(&q) => {
                            s.push(q);
                            i += 2;
                        }
                        Some(c) if *c == q => {
                            i += 1;
                            break;
                        }
                        Some(c) => {
                            s.push(*c);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Quoted(s));
            }
            '-' if chars.get(i + 1).is_some_and(|c| c.is_ascii_alphabetic()) => {
                let start = i + 1;
                i += 1;
                while i < chars.len() && chars[i].is_ascii_alphabetic() {
                    i += 1;
                }
                out.push(Tok::Op(
                    chars[start..i]
                        .iter()
                        .collect::<String>()
                        .to_ascii_lowercase(),
                ));
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !chars[i].is_whitespace()
                    && chars[i] != '('
                    && chars[i] != ')'
                {
                    i += 1;
                }
                out.push(Tok::Word(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

pub(crate) fn parse(s: &str) -> Result<OPath, String> {
    let toks = tokenize(s)?;
    let mut pos = 0;
    let e = or(&toks, &mut pos)?;
    if pos != toks.len() {
        return Err(format!("Invalid filter syntax near position {pos}."));
    }
    Ok(e)
}

fn or(t: &[Tok], pos: &mut usize) -> Result<OPath, String> {
    let mut left = and(t, pos)?;
    while t.get(*pos) == Some(&Tok::Op("or".into())) {
        *pos += 1;
        left = OPath::Or(Box::new(left), Box::new(and(t, pos)?));
    }
    Ok(left)
}

fn and(t: &[Tok], pos: &mut usize) -> Result<OPath, String> {
    let mut left = unary(t, pos)?;
    while t.get(*pos) == Some(&Tok::Op("and".into())) {
        *pos += 1;
        left = OPath::And(Box::new(left), Box::new(unary(t, pos)?));
    }
    Ok(left)
}

fn unary(t: &[Tok], pos: &mut usize) -> Result<OPath, String> {
    if t.get(*pos) == Some(&Tok::Op("not".into())) {
        *pos += 1;
        return Ok(OPath::Not(Box::new(unary(t, pos)?)));
    }
    match t.get(*pos).cloned() {
        Some(Tok::LParen) => {
            *pos += 1;
            let e = or(t, pos)?;
            if t.get(*pos) != Some(&Tok::RParen) {
                return Err("missing ')'".into());
            }
            *pos += 1;
            Ok(e)
        }
        Some(Tok::Word(prop)) => {
            *pos += 1;
            let Some(Tok::Op(op)) = t.get(*pos).cloned() else {
                return Err(format!("expected an operator after {prop}"));
            };
            if !matches!(
                op.as_str(),
                "eq" | "ne" | "like" | "notlike" | "gt" | "ge" | "lt" | "le"
            ) {
                return Err(format!("The operator '-{op}' is not supported."));
            }
            *pos += 1;
            let value = match t.get(*pos).cloned() {
                Some(Tok::Quoted(v)) => Some(v),
                Some(Tok::Word(w)) if w.eq_ignore_ascii_case("$null") => None,
                Some(Tok::Word(w)) if w.eq_ignore_ascii_case("$true") => Some("true".into()),
                Some(Tok::Word(w)) if w.eq_ignore_ascii_case("$false") => Some("false".into()),
                Some(Tok::Word(w)) => Some(w),
                _ => return Err("expected a value".into()),
            };
            *pos += 1;
            Ok(OPath::Cmp { prop, op, value })
        }
        other => Err(format!("unexpected {other:?}")),
    }
}

fn like(pattern: &str, s: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let s: Vec<char> = s.to_lowercase().chars().collect();
    // Iterative wildcard match with '*'.
    let (mut pi, mut si, mut star, mut mark) = (0usize, 0usize, None::<usize>, 0usize);
    while si < s.len() {
        if pi < p.len() && p[pi] != '*' && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

fn scalar_matches(v: &Value, op: &str, want: Option<&str>) -> bool {
    let text = match v {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    };
    match (op, text.as_deref(), want) {
        ("eq", None, None) => true,
        ("eq", Some(a), Some(b)) => {
            a.eq_ignore_ascii_case(b) || a.to_lowercase() == b.to_lowercase()
        }
        ("like", Some(a), Some(b)) => like(b, a),
        ("gt" | "ge" | "lt" | "le", Some(a), Some(b)) => {
            let ord = compare(a, b);
            match op {
                "gt" => ord.is_gt(),
                "ge" => ord.is_ge(),
                "lt" => ord.is_lt(),
                _ => ord.is_le(),
            }
        }
        _ => false,
    }
}

/// A date-time as OPATH accepts one: ISO 8601 (`2026-12-06T11:00:00Z`, with an offset, or without a zone: UTC),
/// `yyyy-MM-dd HH:mm:ss`, `yyyy-MM-dd`, or the en-US `M/d/yyyy H:mm:ss` PowerShell prints [guess at the set].
fn parse_date(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};
    let s = s.trim();
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(s) {
        return Some(d.with_timezone(&Utc));
    }
    let naive = [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S",
        "%m/%d/%Y %H:%M:%S",
        "%m/%d/%Y %I:%M:%S %p",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s.trim_end_matches('Z'), f).ok())
    .or_else(|| {
        ["%Y-%m-%d", "%m/%d/%Y"]
            .iter()
            .find_map(|f| NaiveDate::parse_from_str(s, f).ok())
            .and_then(|d| d.and_hms_opt(0, 0, 0))
    })?;
    Some(Utc.from_utc_datetime(&naive))
}

/// Orders two property values: as date-times when both are, else as numbers, else as case-insensitive text.
fn compare(a: &str, b: &str) -> std::cmp::Ordering {
    if let (Some(x), Some(y)) = (parse_date(a), parse_date(b)) {
        return x.cmp(&y);
    }
    if let (Ok(x), Ok(y)) = (a.parse::<f64>(), b.parse::<f64>()) {
        return x.total_cmp(&y);
    }
    a.to_lowercase().cmp(&b.to_lowercase())
}

impl OPath {
    /// Evaluates over an object whose keys are Exchange property names (matched case-insensitively).
    pub(crate) fn eval(&self, obj: &serde_json::Map<String, Value>) -> bool {
        match self {
            OPath::And(a, b) => a.eval(obj) && b.eval(obj),
            OPath::Or(a, b) => a.eval(obj) || b.eval(obj),
            OPath::Not(e) => !e.eval(obj),
            OPath::Cmp { prop, op, value } => {
                let v = obj.get(prop.as_str()).or_else(|| {
                    obj.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(prop))
                        .map(|(_, v)| v)
                });
                let v = v.cloned().unwrap_or(Value::Null);
                let (base, negate) = match op.as_str() {
                    "ne" => ("eq", true),
                    "notlike" => ("like", true),
                    other => (other, false),
                };
                let hit = match &v {
                    Value::Array(items) => {
                        items
                            .iter()
                            .any(|i| scalar_matches(i, base, value.as_deref()))
                            || (items.is_empty() && value.is_none() && base == "eq")
                    }
                    other => scalar_matches(other, base, value.as_deref()),
                };
                hit != negate
            }
        }
    }

    /// `CustomAttributeN -eq 'value'`: the one shape galbridge uses to find its own contacts (indexed fast path).
    pub(crate) fn as_custom_attribute_eq(&self) -> Option<(usize, &str)> {
        match self {
            OPath::Cmp {
                prop,
                op,
                value: Some(v),
            } if op == "eq" => {
                let n: usize = prop
                    .to_ascii_lowercase()
                    .strip_prefix("customattribute")?
                    .parse()
                    .ok()?;
                (1..=15).contains(&n).then_some((n, v.as_str()))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn opath_orders_dates_and_combines_hidden_and_id_filters() {
        let obj = json!({"ExternalDirectoryObjectId": "id-2", "HiddenFromAddressListsEnabled": true, "WhenChangedUTC": "2026-12-06T11:00:05Z"});
        let obj = obj.as_object().unwrap();
        let yes = |f: &str| parse(f).unwrap().eval(obj);
        assert!(yes("WhenChangedUTC -ge '2026-12-06T11:00:05Z'"));
        assert!(!yes("WhenChangedUTC -gt '2026-12-06T11:00:05Z'"));
        assert!(yes("WhenChangedUTC -gt '2026-12-06 11:00:04'"));
        assert!(yes("WhenChangedUTC -lt '12/7/2026 00:00:00'"));
        assert!(yes("HiddenFromAddressListsEnabled -eq 'True'"));
        assert!(yes(
            "HiddenFromAddressListsEnabled -eq $true -and (ExternalDirectoryObjectId -eq 'id-1' -or ExternalDirectoryObjectId -eq 'id-2')"
        ));
        assert!(!yes(
            "(ExternalDirectoryObjectId -eq 'id-1' -or ExternalDirectoryObjectId -eq 'id-3') -and HiddenFromAddressListsEnabled -eq $true"
        ));
    }

    #[test]
    fn opath_eq_like_and_or_match_exchange_semantics() {
        let obj = json!({"CustomAttribute15": "galbridge:t:1", "ExternalEmailAddress": "SMTP:ada@acme.example", "EmailAddresses": ["SMTP:ada@acme.example"], "HiddenFromAddressListsEnabled": false});
        let obj = obj.as_object().unwrap();
        assert!(
            parse("CustomAttribute15 -eq 'galbridge:t:1'")
                .unwrap()
                .eval(obj)
        );
        assert!(
            parse("customattribute15 -like 'GALBRIDGE:*'")
                .unwrap()
                .eval(obj)
        );
        assert!(!parse("CustomAttribute15 -like 'other*'").unwrap().eval(obj));
        assert!(
            parse(
                "(CustomAttribute1 -eq $null) -and (ExternalEmailAddress -like '*@acme.example')"
            )
            .unwrap()
            .eval(obj)
        );
        assert!(
            parse("EmailAddresses -eq 'smtp:ada@acme.example' -or Name -eq 'x'")
                .unwrap()
                .eval(obj)
        );
        assert!(
            parse("HiddenFromAddressListsEnabled -eq $false")
                .unwrap()
                .eval(obj)
        );
        assert!(parse("CustomAttribute15 -between 'a'").is_err());
    }
}
