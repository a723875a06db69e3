//! Proxies' tokens checked by the API server (TokenReview), in Kubernetes mode.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use braid_api::control::TOKEN_AUDIENCE;
use futures::future::BoxFuture;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::PostParams;
use kube::{Api, Client};
use sha2::{Digest, Sha256};

use super::auth::{AuthError, Authenticator, Principal};

/// How long a token the API server accepted is trusted without asking again.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// How many accepted tokens are remembered at most.
pub const CACHE_MAX_ENTRIES: usize = 10_000;

/// Where a projected token names the pod it is bound to.
const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
/// How the API server names a ServiceAccount user.
const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// Checks tokens with the API server's TokenReview, for audience `braid`.
///
/// Accepted tokens are remembered briefly (a digest, not the token), so a storm of
/// reconnecting proxies costs the API server one review per pod, not one per attempt. A
/// token revoked in that window (its pod deleted) is trusted until the entry expires;
/// refusals are not remembered, so a fixed token works at once.
pub struct TokenReviewer {
    api: Api<TokenReview>,
    audience: String,
    ttl: Duration,
    max_entries: usize,
    cache: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
}

impl TokenReviewer {
    /// Reviews tokens through `client` (which needs `create` on `tokenreviews`), caching
    /// accepted ones for [`CACHE_TTL`], at most [`CACHE_MAX_ENTRIES`].
    pub fn new(client: Client) -> Self {
        Self {
            api: Api::all(client),
            audience: TOKEN_AUDIENCE.to_string(),
            ttl: CACHE_TTL,
            max_entries: CACHE_MAX_ENTRIES,
            cache: Mutex::default(),
        }
    }

    /// Remembers accepted tokens for `ttl` (zero: not at all), at most `max_entries`.
    pub fn with_cache(mut self, ttl: Duration, max_entries: usize) -> Self {
        self.ttl = ttl;
        self.max_entries = max_entries;
        self
    }

    fn cached(&self, digest: &[u8; 32]) -> Option<Principal> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(digest)
            .filter(|(_, expires)| *expires > Instant::now())
            .map(|(who, _)| who.clone())
    }

    fn remember(&self, digest: [u8; 32], who: &Principal) {
        if self.ttl.is_zero() || self.max_entries == 0 {
            return;
        }
        let now = Instant::now();
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= self.max_entries {
            cache.retain(|_, (_, expires)| *expires > now);
        }
        if cache.len() >= self.max_entries {
            // Still full of live entries: the one closest to expiring goes first.
            if let Some(oldest) = cache.iter().min_by_key(|(_, (_, e))| *e).map(|(k, _)| *k) {
                cache.remove(&oldest);
            }
        }
        cache.insert(digest, (who.clone(), now + self.ttl));
    }

    async fn review(&self, token: &str) -> Result<Principal, AuthError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..Default::default()
        };
        let reviewed = self
            .api
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| match &e {
                kube::Error::Api(s) if s.code == 403 => AuthError::Unavailable(format!(
                    "the operator may not create tokenreviews ({}): apply manifests/rbac/operator.yaml",
                    s.message
                )),
                _ => AuthError::Unavailable(format!("TokenReview failed: {e}")),
            })?;
        principal(reviewed.status.as_ref(), &self.audience)
    }
}

impl Authenticator for TokenReviewer {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Principal, AuthError>> {
        Box::pin(async move {
            let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            if let Some(who) = self.cached(&digest) {
                return Ok(who);
            }
            let who = self.review(token).await?;
            self.remember(digest, &who);
            Ok(who)
        })
    }
}

/// Who the API server says a token belongs to: a ServiceAccount
/// (`system:serviceaccount:<namespace>:<name>`), and the pod when the token is bound to
/// one. The status must list `audience`: a review that does not is from a server that
/// ignored the requested audience, or says the token is only good for the API server.
pub fn principal(
    status: Option<&TokenReviewStatus>,
    audience: &str,
) -> Result<Principal, AuthError> {
    let status = status.ok_or_else(|| {
        AuthError::Unavailable("the API server returned a TokenReview without a status".into())
    })?;
    if status.authenticated != Some(true) {
        let reason = status
            .error
            .clone()
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| "not authenticated (expired, or not issued by this cluster)".into());
        return Err(AuthError::Invalid(reason));
    }
    if !status.audiences.iter().flatten().any(|a| a == audience) {
        return Err(AuthError::Invalid(format!(
            "the token is not for audience {audience:?}: mount a projected ServiceAccount token with audience {audience}"
        )));
    }
    let user = status.user.as_ref();
    let username = user.and_then(|u| u.username.as_deref()).unwrap_or_default();
    let (namespace, service_account) = username
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)
        .and_then(|rest| rest.split_once(':'))
        .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty() && !sa.contains(':'))
        .ok_or_else(|| {
            AuthError::Invalid(format!(
                "user {username:?} is not a service account: only pods' ServiceAccount tokens are accepted"
            ))
        })?;
    let pod = user
        .and_then(|u| u.extra.as_ref())
        .and_then(|extra| extra.get(POD_NAME_EXTRA))
        .and_then(|values| values.first())
        .filter(|p| !p.is_empty())
        .cloned();
    Ok(Principal {
        namespace: namespace.to_string(),
        service_account: service_account.to_string(),
        pod,
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::authentication::v1::UserInfo;

    use super::*;

    fn status(username: &str, audiences: &[&str], pod: Option<&str>) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(audiences.iter().map(|a| a.to_string()).collect()),
            user: Some(UserInfo {
                username: Some(username.into()),
                extra: pod.map(|p| [(POD_NAME_EXTRA.to_string(), vec![p.to_string()])].into()),
                ..Default::default()
            }),
            error: None,
        }
    }

    #[test]
    fn a_bound_service_account_token() {
        let who = principal(
            Some(&status(
                "system:serviceaccount:shop:payments",
                &["braid"],
                Some("payments-0"),
            )),
            "braid",
        )
        .unwrap();
        assert_eq!(
            who,
            Principal {
                namespace: "shop".into(),
                service_account: "payments".into(),
                pod: Some("payments-0".into()),
            }
        );
    }

    #[test]
    fn an_unbound_token_names_no_pod() {
        let who = principal(
            Some(&status(
                "system:serviceaccount:shop:payments",
                &["braid"],
                None,
            )),
            "braid",
        )
        .unwrap();
        assert_eq!(who.pod, None);
    }

    #[test]
    fn refusals_say_why() {
        let invalid = |s: TokenReviewStatus| match principal(Some(&s), "braid") {
            Err(AuthError::Invalid(reason)) => reason,
            other => panic!("expected Invalid, got {other:?}"),
        };
        let mut expired = status("system:serviceaccount:shop:payments", &["braid"], None);
        expired.authenticated = Some(false);
        expired.error = Some("token has expired".into());
        assert_eq!(invalid(expired.clone()), "token has expired");
        expired.error = None;
        assert!(invalid(expired).contains("not authenticated"));

        let reason = invalid(status("system:serviceaccount:shop:payments", &[], None));
        assert!(reason.contains("audience \"braid\""), "{reason}");
        let reason = invalid(status(
            "system:serviceaccount:shop:payments",
            &["https://kubernetes.default.svc"],
            None,
        ));
        assert!(reason.contains("audience"), "{reason}");

        for user in [
            "alice",
            "system:node:worker-1",
            "system:serviceaccount:shop",
            "system:serviceaccount::payments",
            "system:serviceaccount:shop:",
        ] {
            let reason = invalid(status(user, &["braid"], None));
            assert!(reason.contains("not a service account"), "{user}: {reason}");
        }
    }

    #[tokio::test]
    async fn the_cache_is_bounded() {
        let (service, _handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let reviewer = TokenReviewer::new(Client::new(service, "default"))
            .with_cache(Duration::from_secs(60), 2);
        let who = Principal {
            namespace: "shop".into(),
            service_account: "payments".into(),
            pod: None,
        };
        for i in 0..3u8 {
            reviewer.remember([i; 32], &who);
            // Distinct expiry times, so "oldest" is well defined.
            std::thread::sleep(Duration::from_millis(2));
        }
        let cache = reviewer.cache.lock().unwrap();
        assert_eq!(cache.len(), 2);
        assert!(cache.contains_key(&[2; 32]), "the newest stays");
        assert!(!cache.contains_key(&[0; 32]), "the oldest went");
    }

    #[test]
    fn no_status_is_a_failure_to_check() {
        assert!(matches!(
            principal(None, "braid"),
            Err(AuthError::Unavailable(_))
        ));
    }
}
