//! The tenant's client list, a page at a time, without any secret.

use std::sync::atomic::Ordering;

use serde::Deserialize;
use tracing::info;

use super::{Auth0Client, LIST_SCOPE};
use crate::rotation::{Client, ClientPage, IssuerError, PageCursor};

/// What the client list asks Auth0 for: no secret. `client_authentication_methods` (which
/// credentials a key client has attached) needs `read:client_keys` or `read:client_credentials`;
/// a grant with neither lists without it.
const LISTED_FIELDS: &str = "client_id,name,app_type,token_endpoint_auth_method,client_metadata,\
                             client_authentication_methods";
const LISTED_FIELDS_WITHOUT_METHODS: &str =
    "client_id,name,app_type,token_endpoint_auth_method,client_metadata";

impl Auth0Client {
    /// `GET /api/v2/clients` with checkpoint pages, asking only for the members ListClients
    /// and schedules use: never `client_secret`, whatever the token's scopes. A grant that may
    /// not read `client_authentication_methods` is asked once more without it, and from then
    /// on never (its key clients then list as clients without a secret).
    pub(super) async fn list(
        &self,
        from: Option<&PageCursor>,
        size: usize,
    ) -> Result<ClientPage, IssuerError> {
        if self.inner.methods_unlisted.load(Ordering::Relaxed) {
            return self
                .list_fields(from, size, LISTED_FIELDS_WITHOUT_METHODS)
                .await;
        }
        match self.list_fields(from, size, LISTED_FIELDS).await {
            Err(IssuerError::MissingScope(_)) => {
                // Refused for that field only when the list without it is allowed.
                let listed = self
                    .list_fields(from, size, LISTED_FIELDS_WITHOUT_METHODS)
                    .await?;
                self.inner.methods_unlisted.store(true, Ordering::Relaxed);
                info!(
                    "the Management API token may not read client_authentication_methods \
                     (read:client_keys or read:client_credentials): clients that authenticate \
                     with a key list as not rotatable"
                );
                Ok(listed)
            }
            listed => listed,
        }
    }

    async fn list_fields(
        &self,
        from: Option<&PageCursor>,
        size: usize,
        fields: &str,
    ) -> Result<ClientPage, IssuerError> {
        let mut url = self.url(&["api", "v2", "clients"]);
        url.query_pairs_mut()
            .append_pair("fields", fields)
            .append_pair("include_fields", "true")
            .append_pair("take", &size.clamp(1, 100).to_string());
        if let Some(from) = from {
            url.query_pairs_mut().append_pair("from", from.as_str());
        }
        let response = self.get(&url, "list-clients", LIST_SCOPE).await?;
        #[derive(Deserialize)]
        struct Page {
            clients: Vec<Client>,
            next: Option<String>,
        }
        let page: Page = response.json().await.map_err(|_| {
            IssuerError::Protocol("the client list is not the expected JSON".into())
        })?;
        let next = match page.next.filter(|n| !n.is_empty()) {
            None => None,
            Some(next) => Some(PageCursor::parse(&next).map_err(|_| {
                IssuerError::Protocol("the client list's next checkpoint is malformed".into())
            })?),
        };
        Ok(ClientPage {
            clients: page.clients,
            next,
        })
    }
}
