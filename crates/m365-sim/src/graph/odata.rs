//! OData query options as Graph reads them: `$select`, `$top`, `$skiptoken`, and a `$filter` subset (comparison
//! operators, `and`/`or`/`not`, `startswith`/`endswith`, `in`, lambda `any` over collections, including
//! `singleValueExtendedProperties/Any(ep: ep/id eq '…' and ep/value eq '…')`). Filters evaluate over JSON.

use std::collections::HashMap;

use serde_json::Value;

/// Query options with `$`-prefixed names lower-cased (Graph accepts `$Select` and `select` alike).
pub(crate) fn query_options(raw: Option<&str>) -> HashMap<String, String> {
    let mut out = HashMap::new();
    if let Some(raw) = raw {
        for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
            let key = k.trim_start_matches('$').to_ascii_lowercase();
            out.insert(key, v.into_owned());
        }
    }
    out
}

pub(crate) fn select_list(opts: &HashMap<String, String>) -> Option<Vec<String>> {
    opts.get("select").map(|s| {
        s.split(',')
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect()
    })
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Str(String),
    Bool(bool),
    Null,
    Num(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Cmp {
        path: Vec<String>,
        op: String,
        value: Literal,
    },
    In {
        path: Vec<String>,
        values: Vec<Literal>,
    },
    Func {
        name: String,
        path: Vec<String>,
        arg: String,
    },
    Any {
        path: Vec<String>,
        var: String,
        body: Box<Expr>,
    },
}

impl Expr {
    /// True when the filter needs Graph's advanced query capabilities (`ConsistencyLevel: eventual`).
    pub(crate) fn needs_advanced_query(&self) -> bool {
        match self {
            Expr::And(a, b) | Expr::Or(a, b) => {
                a.needs_advanced_query() || b.needs_advanced_query()
            }
            Expr::Not(_) => true,
            Expr::Cmp { op, .. } => op == "ne",
            Expr::Func { name, .. } => name == "endswith",
            Expr::In { .. } => false,
            Expr::Any { body, .. } => body.needs_advanced_query(),
        }
    }

    pub(crate) fn eval(&self, obj: &Value) -> bool {
        self.eval_in(obj, &[])
    }

    fn eval_in(&self, obj: &Value, vars: &[(&str, &Value)]) -> bool {
        match self {
            Expr::And(a, b) => a.eval_in(obj, vars) && b.eval_in(obj, vars),
            Expr::Or(a, b) => a.eval_in(obj, vars) || b.eval_in(obj, vars),
            Expr::Not(e) => !e.eval_in(obj, vars),
            Expr::Cmp { path, op, value } => compare(resolve(obj, path, vars), op, value),
            Expr::In { path, values } => {
                let v = resolve(obj, path, vars);
                values.iter().any(|lit| compare(v, "eq", lit))
            }
            Expr::Func { name, path, arg } => {
                let Some(s) = resolve(obj, path, vars).and_then(Value::as_str) else {
                    return false;
                };
                let (s, arg) = (s.to_lowercase(), arg.to_lowercase());
                if name == "startswith" {
                    s.starts_with(&arg)
                } else {
                    s.ends_with(&arg)
                }
            }
            Expr::Any { path, var, body } => match resolve(obj, path, vars) {
                Some(Value::Array(items)) => items.iter().any(|item| {
                    let mut inner: Vec<(&str, &Value)> = vars.to_vec();
                    inner.push((var.as_str(), item));
                    body.eval_in(obj, &inner)
                }),
                _ => false,
            },
        }
    }
}

fn resolve<'a>(obj: &'a Value, path: &[String], vars: &[(&str, &'a Value)]) -> Option<&'a Value> {
    let (mut cur, rest) = match path.first() {
        Some(first) if vars.iter().any(|(v, _)| v == first) => (
            vars.iter()
                .rev()
                .find(|(v, _)| v == first)
                .map(|(_, val)| *val)?,
            &path[1..],
        ),
        _ => (obj, path),
    };
    for seg in rest {
        cur = match cur {
            Value::Object(m) => m.get(seg.as_str()).or_else(|| {
                m.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(seg))
                    .map(|(_, v)| v)
            })?,
            _ => return None,
        };
    }
    Some(cur)
}

fn compare(v: Option<&Value>, op: &str, lit: &Literal) -> bool {
    use std::cmp::Ordering;
    let ord: Option<Ordering> = match (v, lit) {
        (None | Some(Value::Null), Literal::Null) => Some(Ordering::Equal),
        (Some(_), Literal::Null) | (None | Some(Value::Null), _) => None,
        (Some(Value::String(s)), Literal::Str(l)) => Some(s.to_lowercase().cmp(&l.to_lowercase())),
        (Some(Value::Bool(b)), Literal::Bool(l)) => Some(b.cmp(l)),
        (Some(Value::Number(n)), Literal::Num(l)) => n.as_f64().and_then(|n| n.partial_cmp(l)),
        (Some(Value::Array(items)), _) => {
            // Comparing a collection with eq means "contains" only inside any(); outside it never matches.
            let _ = items;
            None
        }
        _ => None,
    };
    match op {
        "eq" => ord == Some(Ordering::Equal),
        "ne" => ord != Some(Ordering::Equal),
        "gt" => ord == Some(Ordering::Greater),
        "ge" => matches!(ord, Some(Ordering::Greater | Ordering::Equal)),
        "lt" => ord == Some(Ordering::Less),
        "le" => matches!(ord, Some(Ordering::Less | Ordering::Equal)),
        _ => false,
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    LParen,
    RParen,
    Comma,
    Colon,
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while i < chars.len() {
        let c = chars[i];
        match c {
            ' ' | '\t' => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            ':' => {
                out.push(Tok::Colon);
                i += 1;
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("unterminated string literal".into()),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(s));
            }
            c if c.is_ascii_digit() || c == '-' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_digit() || chars[i] == '.' || chars[i] == '-')
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().collect();
                out.push(Tok::Num(
                    text.parse().map_err(|_| format!("bad number {text}"))?,
                ));
            }
            _ => {
                let start = i;
                while i < chars.len()
                    && !matches!(chars[i], ' ' | '\t' | '(' | ')' | ',' | ':' | '\'')
                {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

pub(crate) fn parse_filter(s: &str) -> Result<Expr, String> {
    let mut p = Parser {
        toks: tokenize(s)?,
        pos: 0,
    };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(format!("unexpected token {:?}", p.toks[p.pos]));
    }
    Ok(e)
}

impl Parser {
    fn peek_ident(&self, word: &str) -> bool {
        matches!(self.toks.get(self.pos), Some(Tok::Ident(w)) if w.eq_ignore_ascii_case(word))
    }

    fn expect(&mut self, t: &Tok) -> Result<(), String> {
        if self.toks.get(self.pos) == Some(t) {
            self.pos += 1;
            Ok(())
        } else {
            Err(format!("expected {t:?}"))
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.peek_ident("or") {
            self.pos += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while self.peek_ident("and") {
            self.pos += 1;
            left = Expr::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.peek_ident("not") {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        self.primary()
    }

    fn literal(&mut self) -> Result<Literal, String> {
        let t = self.toks.get(self.pos).cloned().ok_or("expected a value")?;
        self.pos += 1;
        Ok(match t {
            Tok::Str(s) => Literal::Str(s),
            Tok::Num(n) => Literal::Num(n),
            Tok::Ident(w) if w.eq_ignore_ascii_case("true") => Literal::Bool(true),
            Tok::Ident(w) if w.eq_ignore_ascii_case("false") => Literal::Bool(false),
            Tok::Ident(w) if w.eq_ignore_ascii_case("null") => Literal::Null,
            other => return Err(format!("expected a literal, found {other:?}")),
        })
    }

    fn primary(&mut self) -> Result<Expr, String> {
        let t = self
            .toks
            .get(self.pos)
            .cloned()
            .ok_or("unexpected end of filter")?;
        self.pos += 1;
        match t {
            Tok::LParen => {
                let e = self.or()?;
                self.expect(&Tok::RParen)?;
                Ok(e)
            }
            Tok::Ident(name)
                if (name.eq_ignore_ascii_case("startswith")
                    || name.eq_ignore_ascii_case("endswith"))
                    && self.toks.get(self.pos) == Some(&Tok::LParen) =>
            {
                self.pos += 1;
                let path = match self.toks.get(self.pos).cloned() {
                    Some(Tok::Ident(p)) => p,
                    _ => return Err("expected a property".into()),
                };
                self.pos += 1;
                self.expect(&Tok::Comma)?;
                let Literal::Str(arg) = self.literal()? else {
                    return Err("expected a string".into());
                };
                self.expect(&Tok::RParen)?;
                Ok(Expr::Func {
                    name: name.to_ascii_lowercase(),
                    path: split_path(&path),
                    arg,
                })
            }
            Tok::Ident(path) => {
                let lower = path.to_ascii_lowercase();
                if (lower.ends_with("/any") || lower.ends_with("/all"))
                    && self.toks.get(self.pos) == Some(&Tok::LParen)
                {
                    self.pos += 1;
                    let var = match self.toks.get(self.pos).cloned() {
                        Some(Tok::Ident(v)) => v,
                        _ => return Err("expected a lambda variable".into()),
                    };
                    self.pos += 1;
                    self.expect(&Tok::Colon)?;
                    let body = self.or()?;
                    self.expect(&Tok::RParen)?;
                    let base = &path[..path.len() - 4];
                    return Ok(Expr::Any {
                        path: split_path(base),
                        var,
                        body: Box::new(body),
                    });
                }
                let op = match self.toks.get(self.pos).cloned() {
                    Some(Tok::Ident(op)) => op.to_ascii_lowercase(),
                    _ => return Err(format!("expected an operator after {path}")),
                };
                self.pos += 1;
                if op == "in" {
                    self.expect(&Tok::LParen)?;
                    let mut values = vec![self.literal()?];
                    while self.toks.get(self.pos) == Some(&Tok::Comma) {
                        self.pos += 1;
                        values.push(self.literal()?);
                    }
                    self.expect(&Tok::RParen)?;
                    return Ok(Expr::In {
                        path: split_path(&path),
                        values,
                    });
                }
                if !matches!(op.as_str(), "eq" | "ne" | "gt" | "ge" | "lt" | "le") {
                    return Err(format!("unsupported operator {op}"));
                }
                Ok(Expr::Cmp {
                    path: split_path(&path),
                    op,
                    value: self.literal()?,
                })
            }
            other => Err(format!("unexpected {other:?}")),
        }
    }
}

fn split_path(p: &str) -> Vec<String> {
    p.split('/').map(str::to_string).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extended_property_any_filter_matches_only_the_tagged_contact() {
        let f = parse_filter("singleValueExtendedProperties/Any(ep: ep/id eq 'String {00020329-0000-0000-C000-000000000046} Name galbridgeAnchor' and ep/value eq 'x:1')").unwrap();
        let tagged = json!({"singleValueExtendedProperties":[{"id":"String {00020329-0000-0000-C000-000000000046} Name galbridgeAnchor","value":"x:1"}]});
        let other = json!({"singleValueExtendedProperties":[{"id":"String {00020329-0000-0000-C000-000000000046} Name galbridgeAnchor","value":"x:2"}]});
        assert!(f.eval(&tagged));
        assert!(!f.eval(&other));
    }

    #[test]
    fn graph_filter_subset_parses_and_flags_advanced_queries() {
        let f = parse_filter(
            "startswith(displayName,'Ada') and (userType eq 'Member' or accountEnabled eq false)",
        )
        .unwrap();
        assert!(f.eval(
            &json!({"displayName":"ada lovelace","userType":"Member","accountEnabled":true})
        ));
        assert!(!f.needs_advanced_query());
        assert!(
            parse_filter("department ne 'Sales'")
                .unwrap()
                .needs_advanced_query()
        );
        assert!(
            parse_filter("proxyAddresses/any(p:p eq 'smtp:a@b.c')")
                .unwrap()
                .eval(&json!({"proxyAddresses":["SMTP:A@b.c"]}))
        );
    }
}
