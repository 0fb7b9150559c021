//! `GET /api/v2/clients` as Auth0 answers it: offset pages (`page`, `per_page` up to 100,
//! `include_totals`) or checkpoint pages (`from`, `take` up to 100, `next`); filters
//! `app_type`, `is_global`, `is_first_party`, `client_ids`; `fields`/`include_fields`; and the
//! same projection as `GET /api/v2/clients/{id}`: secrets and keys only with `read:client_keys`.

use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    KEY_SCOPES, READ_SCOPES, SENSITIVE_FIELDS, Shared, lock,
    routes::{api_error, json_response},
};

/// Auth0's page size when none is asked for, and the largest it serves.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 100;

#[derive(Deserialize, Default)]
pub(super) struct FieldsQuery {
    pub fields: Option<String>,
    pub include_fields: Option<bool>,
}

#[derive(Deserialize, Default)]
pub(super) struct ListQuery {
    // Not a flattened FieldsQuery: serde cannot read a flattened bool from a query string.
    fields: Option<String>,
    include_fields: Option<bool>,
    page: Option<usize>,
    per_page: Option<usize>,
    include_totals: Option<bool>,
    from: Option<String>,
    take: Option<usize>,
    app_type: Option<String>,
    is_global: Option<bool>,
    is_first_party: Option<bool>,
    client_ids: Option<String>,
}

/// A client's document as a caller with `may_read_keys` and this field filter sees it;
/// `Err` is Auth0's refusal to show a sensitive field asked for by name.
pub(super) fn project(
    mut doc: Map<String, Value>,
    secret: Option<&str>,
    may_read_keys: bool,
    query: &FieldsQuery,
) -> Result<Map<String, Value>, Response> {
    if let Some(secret) = secret {
        doc.insert("client_secret".into(), Value::String(secret.to_owned()));
    }
    let requested: Vec<&str> = query
        .fields
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .collect();
    let include = query.include_fields.unwrap_or(true);
    if !may_read_keys {
        let denied: Vec<&str> = requested
            .iter()
            .copied()
            .filter(|f| include && SENSITIVE_FIELDS.contains(f))
            .collect();
        if !denied.is_empty() {
            return Err(api_error(
                StatusCode::FORBIDDEN,
                &format!("You cannot read the following fields: {}", denied.join(",")),
                Some("insufficient_scope"),
            ));
        }
        for field in SENSITIVE_FIELDS {
            doc.remove(field);
        }
    }
    if !requested.is_empty() {
        // `tenant` is always returned, whatever the filter.
        doc.retain(|k, _| k == "tenant" || requested.contains(&k.as_str()) == include);
    }
    Ok(doc)
}

fn invalid_query(message: &str) -> Response {
    api_error(
        StatusCode::BAD_REQUEST,
        &format!("Query validation error: {message}"),
        Some("invalid_query_string"),
    )
}

pub(super) async fn list_clients(
    State(shared): State<Shared>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    let mut inner = lock(&shared);
    inner.stats.list_requests += 1;
    let (rate, scopes) = match inner.admit(&headers, &READ_SCOPES, super::Group::ClientsRead) {
        Ok(admitted) => admitted,
        Err(refused) => return refused,
    };
    let checkpoint = query.from.is_some() || query.take.is_some();
    if checkpoint && (query.page.is_some() || query.per_page.is_some()) {
        return rate.apply(invalid_query(
            "from/take (checkpoint) and page/per_page (offset) cannot be combined",
        ));
    }
    if query.per_page.is_some_and(|n| n > MAX_PAGE) {
        return rate.apply(invalid_query(&format!(
            "per_page must be less than or equal to {MAX_PAGE}"
        )));
    }
    let may_read_keys = scopes.iter().any(|s| KEY_SCOPES.contains(&s.as_str()));
    let split = |list: &Option<String>| -> Option<Vec<String>> {
        list.as_ref()
            .map(|l| l.split(',').map(|s| s.trim().to_owned()).collect())
    };
    let (app_types, ids) = (split(&query.app_type), split(&query.client_ids));
    let flag = |doc: &Map<String, Value>, key: &str| doc.get(key).and_then(Value::as_bool);
    // Auth0 does not promise an order; the emulator's is the client id's, so pages are stable.
    let mut selected: Vec<(&String, &super::Client)> = inner
        .clients
        .iter()
        .filter(|(id, c)| {
            let app_type = c.doc.get("app_type").and_then(Value::as_str).unwrap_or("");
            app_types
                .as_ref()
                .is_none_or(|t| t.iter().any(|a| a == app_type))
                && ids.as_ref().is_none_or(|l| l.contains(id))
                && query
                    .is_global
                    .is_none_or(|g| flag(&c.doc, "global") == Some(g))
                && query
                    .is_first_party
                    .is_none_or(|f| flag(&c.doc, "is_first_party") == Some(f))
        })
        .collect();
    selected.sort_by(|a, b| a.0.cmp(b.0));
    let total = selected.len();
    let (start, size) = if checkpoint {
        let start = match &query.from {
            Some(from) => selected.partition_point(|(id, _)| id.as_str() < from.as_str()),
            None => 0,
        };
        (start, query.take.unwrap_or(DEFAULT_PAGE).min(MAX_PAGE))
    } else {
        let size = query.per_page.unwrap_or(DEFAULT_PAGE);
        (query.page.unwrap_or(0).saturating_mul(size), size)
    };
    let fields = FieldsQuery {
        fields: query.fields.clone(),
        include_fields: query.include_fields,
    };
    let mut page = Vec::new();
    for (_, client) in selected.iter().skip(start).take(size) {
        match project(
            client.doc.clone(),
            client.secret.as_deref(),
            may_read_keys,
            &fields,
        ) {
            Ok(doc) => page.push(Value::Object(doc)),
            Err(refused) => return rate.apply(refused),
        }
    }
    let next = selected.get(start + size).map(|(id, _)| (*id).clone());
    inner.stats.listed_secrets += page
        .iter()
        .filter(|d| d.get("client_secret").is_some())
        .count() as u64;
    let body = if checkpoint {
        let mut body = json!({ "clients": page });
        if let Some(next) = next {
            body["next"] = Value::String(next);
        }
        body
    } else if query.include_totals.unwrap_or(false) {
        json!({ "start": start, "limit": size, "length": page.len(), "total": total, "clients": page })
    } else {
        Value::Array(page)
    };
    rate.apply(json_response(StatusCode::OK, body))
}
