//! `/v1.0/groups/delta` and `GET /v1.0/groups/{id}`: every group of the tenant (security groups, distribution
//! lists, mail-enabled security groups, Microsoft 365 groups) with the change tracking of `graph/delta.rs`. Documented
//! behaviour reproduced (group-delta doc): `$select` encoded in the tokens, `$filter` limited to ids (the simulator
//! supports none), `@removed` with `changed`/`deleted`, token expiry. Membership changes are not tracked
//! (`members@delta` is not served), and hiding a group in Exchange is no Graph change.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::delta::{
    DeltaCursor, DeltaEntry, Start, delta_body, expired, page_with_removals, round_end, start_of,
};
use super::odata::{query_options, select_list};
use super::{caller, not_found, page_size};
use crate::model::group::GROUP_PROPS;
use crate::respond::{graph_error, json_response};
use crate::state::SimState;

/// The permissions that read groups (group-delta doc: GroupMember.Read.All is the least privileged).
const READ_GROUPS: &[&str] = &[
    "GroupMember.Read.All",
    "Group.Read.All",
    "Directory.Read.All",
];

/// Resolves `$select` against the group properties; unknown ones are refused as Graph does.
fn group_select(select: Option<&[String]>) -> Result<Vec<&'static str>, Response> {
    let Some(list) = select else {
        return Ok(GROUP_PROPS.to_vec());
    };
    list.iter()
        .map(|p| {
            GROUP_PROPS
                .iter()
                .copied()
                .find(|known| known.eq_ignore_ascii_case(p))
                .ok_or_else(|| {
                    graph_error(
                        StatusCode::BAD_REQUEST,
                        "Request_BadRequest",
                        &format!(
                            "Could not find a property named '{p}' on type 'microsoft.graph.group'."
                        ),
                    )
                })
        })
        .collect()
}

pub(crate) async fn groups_delta(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let caller = match caller(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = caller.require(READ_GROUPS) {
        return r;
    }
    let opts: HashMap<String, String> = query_options(raw.as_deref());
    // Quirk (group-delta doc): the only $filter is on ids; the simulator supports none.
    if opts.contains_key("filter") {
        return graph_error(
            StatusCode::BAD_REQUEST,
            "Request_UnsupportedQuery",
            "Only id filters are supported for groups delta; the simulator supports none.",
        );
    }
    let size = page_size(&state, &opts, &headers, 999).unwrap_or(100);
    let knobs = state.knobs();
    let now = state.clock.now_ms();
    let dir = caller.tenant.dir.read();
    let visible =
        |_: &str, t: &crate::model::Tracked<crate::model::Group>| t.visible_from_ms <= now;
    let cursor = match start_of(&opts) {
        Start::Invalid => {
            return graph_error(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "The delta token is not valid.",
            );
        }
        Start::Latest => {
            let d = DeltaCursor {
                from: dir.seq,
                to: dir.seq,
                after: None,
                generation: dir.delta_generation,
                issued_ms: now,
                select: select_list(&opts),
                replay: None,
            };
            return json_response(
                StatusCode::OK,
                &delta_body(
                    &state,
                    "groups",
                    "/v1.0/groups/delta",
                    Vec::new(),
                    None,
                    Some(d),
                ),
            );
        }
        Start::Fresh => DeltaCursor {
            from: 0,
            to: round_end(dir.seq, 0, &dir.groups, visible),
            after: None,
            generation: dir.delta_generation,
            issued_ms: now,
            select: select_list(&opts),
            replay: None,
        },
        Start::Continue(c, is_delta_link) => {
            let ttl_ms =
                i64::try_from(knobs.delta_token_ttl_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
            if c.generation != dir.delta_generation || (is_delta_link && now - c.issued_ms > ttl_ms)
            {
                let fresh = match &c.select {
                    Some(s) => format!("/v1.0/groups/delta?$select={}", s.join(",")),
                    None => "/v1.0/groups/delta".to_string(),
                };
                return expired(&state, &fresh);
            }
            if is_delta_link {
                DeltaCursor {
                    from: c.to,
                    to: round_end(dir.seq, c.to, &dir.groups, visible),
                    after: None,
                    issued_ms: now,
                    replay: None,
                    ..c
                }
            } else {
                c
            }
        }
    };
    let select = match group_select(cursor.select.as_deref()) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (entries, last) = page_with_removals(
        &dir.groups,
        dir.group_tombstones.iter().map(|(k, v)| (k, *v)),
        &cursor,
        size,
        |_| true,
        knobs.delta_removed_in_initial_round,
    );
    let values: Vec<Value> = entries
        .into_iter()
        .map(|e| match e {
            DeltaEntry::Live(t) => Value::Object(t.value.render(&select)),
            DeltaEntry::Removed(id, reason) => json!({"id": id, "@removed": {"reason": reason}}),
        })
        .collect();
    drop(dir);
    let (next, delta) = match last {
        Some(after) => (
            Some(DeltaCursor {
                after: Some(after),
                ..cursor
            }),
            None,
        ),
        None => (
            None,
            Some(DeltaCursor {
                from: cursor.to,
                after: None,
                ..cursor
            }),
        ),
    };
    json_response(
        StatusCode::OK,
        &delta_body(&state, "groups", "/v1.0/groups/delta", values, next, delta),
    )
}

/// `GET /v1.0/groups/{id}` with `$select`.
pub(crate) async fn get_one(
    State(state): State<Arc<SimState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Response {
    let caller = match caller(&state, &headers) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if let Err(r) = caller.require(READ_GROUPS) {
        return r;
    }
    let opts = query_options(raw.as_deref());
    let select = match group_select(select_list(&opts).as_deref()) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let now = state.clock.now_ms();
    let dir = caller.tenant.dir.read();
    match dir.groups.get(&id) {
        Some(t) if t.visible_from_ms <= now => {
            json_response(StatusCode::OK, &Value::Object(t.value.render(&select)))
        }
        _ => not_found(&id),
    }
}
