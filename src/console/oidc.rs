//! Single sign-on for the console through OpenID Connect (issue 29): Authorization Code with
//! PKCE, `state` and `nonce`, against any provider found by discovery (`openidconnect`).
//!
//! - `GET /auth/oidc/login` records a sign-in under way for this browser (a random id in a
//!   ten-minute HttpOnly cookie, its digest in `oidc_pending` with the state's digest, the nonce
//!   and the PKCE verifier) and sends the browser to the provider.
//! - `GET /auth/oidc/callback` takes that sign-in (deleted at once: a callback is accepted once,
//!   from the browser that started it, with its state), exchanges the code with the verifier, and
//!   checks the ID token: signature by the provider's JWKS (an unknown `kid` fetches the keys
//!   again once, so the provider can rotate them; `none` and symmetric algorithms are refused),
//!   `iss`, `aud`, `exp`, `nonce`. The roles come from one claim of the verified token
//!   (`ERASURE_OIDC_ROLE_CLAIM`) through `ERASURE_OIDC_ROLES`; a person with none is refused.
//!
//! Every refusal is a page with a 4xx status that says why, and opens no session. Tokens are never
//! logged or stored (the token response is dropped once its ID token is read); logs name the
//! reason of a refusal only, never a name, an e-mail or a claim's value.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::cookie::{Cookie, SameSite};
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, get, web};
use base64::Engine as _;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken, IssuerUrl,
    JsonWebKeySet, Nonce, PkceCodeChallenge, PkceCodeVerifier, PostLogoutRedirectUrl,
    ProviderMetadataWithLogout, RedirectUrl, Scope, SignatureVerificationError, TokenResponse,
};
use tokio::sync::Mutex;

use super::session::{open_session, sign_in_page_with};
use super::{Failure, html};
use crate::api::AppState;
use crate::config::{ConsoleSettings, OidcSettings};
use crate::domain::Role;
use crate::store;

/// The cookie that binds a sign-in under way to its browser.
pub const PENDING_COOKIE: &str = "erasure_oidc";

/// How long discovery (and the keys with it) is kept before it is read again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);

/// The console's sign-in settings and, with a provider, its discovery document and keys.
#[derive(Clone)]
pub struct SignIn {
    pub settings: Arc<ConsoleSettings>,
    http: reqwest::Client,
    discovered: Arc<Mutex<Option<Discovered>>>,
}

/// The provider's discovery document with its keys, and when it was read.
type Discovered = (Instant, Arc<ProviderMetadataWithLogout>);

/// Why a sign-in was refused: shown on the page, and named (by its code) in the log.
#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

fn refused(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code,
        message: message.into(),
    }
}

fn bad(code: &'static str, message: impl Into<String>) -> Refusal {
    refused(StatusCode::BAD_REQUEST, code, message)
}

/// The provider could not be reached or answered nonsense.
fn provider_down(what: &str) -> Refusal {
    refused(
        StatusCode::BAD_GATEWAY,
        "provider_unavailable",
        format!(
            "The identity provider could not be reached ({what}). Try again in a moment; if it \
             lasts, tell your administrator."
        ),
    )
}

/// Who signed in, from a verified ID token.
pub struct Verified {
    pub issuer: String,
    pub subject: String,
    pub display_name: String,
    pub email: Option<String>,
    pub roles: Vec<Role>,
}

impl SignIn {
    pub fn new(settings: ConsoleSettings) -> anyhow::Result<SignIn> {
        let http = reqwest::Client::builder()
            // The provider's endpoints are called directly: no redirect is followed (SSRF).
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(SignIn {
            settings: Arc::new(settings),
            http,
            discovered: Arc::new(Mutex::new(None)),
        })
    }

    pub fn oidc(&self) -> Option<&OidcSettings> {
        self.settings.oidc.as_ref()
    }

    /// The provider's name for the sign-in button, when one is configured.
    pub fn provider_name(&self) -> Option<&str> {
        self.oidc().map(|o| o.display_name.as_str())
    }

    /// The provider's discovery document with its keys (read once an hour, or `refresh`ed).
    async fn metadata(
        &self,
        oidc: &OidcSettings,
        refresh: bool,
    ) -> Result<Arc<ProviderMetadataWithLogout>, Refusal> {
        let mut cached = self.discovered.lock().await;
        if !refresh
            && let Some((at, metadata)) = cached.as_ref()
            && at.elapsed() < DISCOVERY_TTL
        {
            return Ok(metadata.clone());
        }
        let issuer = IssuerUrl::new(oidc.issuer.clone())
            .map_err(|_| provider_down("the issuer is not a URL"))?;
        let metadata = ProviderMetadataWithLogout::discover_async(issuer, &self.http)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "OpenID Provider discovery failed");
                provider_down("discovery failed")
            })?;
        let metadata = Arc::new(metadata);
        *cached = Some((Instant::now(), metadata.clone()));
        Ok(metadata)
    }

    /// The keys fetched again (an unknown `kid`: the provider may have rotated its keys).
    async fn refetch_keys(
        &self,
        stale: &ProviderMetadataWithLogout,
    ) -> Result<Arc<ProviderMetadataWithLogout>, Refusal> {
        let jwks = JsonWebKeySet::fetch_async(stale.jwks_uri(), &self.http)
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "OpenID Provider keys could not be fetched");
                provider_down("its keys could not be fetched")
            })?;
        let fresh = Arc::new(stale.clone().set_jwks(jwks));
        *self.discovered.lock().await = Some((Instant::now(), fresh.clone()));
        Ok(fresh)
    }

    fn client(
        oidc: &OidcSettings,
        metadata: &ProviderMetadataWithLogout,
    ) -> Result<
        CoreClient<
            openidconnect::EndpointSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointNotSet,
            openidconnect::EndpointMaybeSet,
            openidconnect::EndpointMaybeSet,
        >,
        Refusal,
    > {
        let redirect = RedirectUrl::new(oidc.redirect_url.clone())
            .map_err(|_| provider_down("the redirect URL is not a URL"))?;
        Ok(CoreClient::from_provider_metadata(
            metadata.clone(),
            ClientId::new(oidc.client_id.clone()),
            oidc.client_secret
                .as_ref()
                .map(|s| ClientSecret::new(s.expose().to_string())),
        )
        .set_redirect_uri(redirect))
    }

    /// Where the provider ends its session on sign-out, when discovery offers it.
    pub async fn end_session_url(&self) -> Option<String> {
        let oidc = self.oidc()?;
        let metadata = self.metadata(oidc, false).await.ok()?;
        let endpoint = metadata
            .additional_metadata()
            .end_session_endpoint
            .clone()?;
        let back = PostLogoutRedirectUrl::new(format!("{}/", oidc.public_url)).ok()?;
        Some(
            openidconnect::LogoutRequest::from(endpoint)
                .set_client_id(ClientId::new(oidc.client_id.clone()))
                .set_post_logout_redirect_uri(back)
                .http_get_url()
                .to_string(),
        )
    }

    /// Starts a sign-in: the provider's authorization URL, and the pending sign-in recorded for
    /// the browser id `browser`.
    async fn begin(&self, state: &AppState, browser: &str) -> Result<String, Refusal> {
        let oidc = self
            .oidc()
            .ok_or_else(|| refused(StatusCode::NOT_FOUND, "no_provider", NO_PROVIDER))?;
        let metadata = self.metadata(oidc, false).await?;
        let client = Self::client(oidc, &metadata)?;
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut request = client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                CsrfToken::new_random,
                Nonce::new_random,
            )
            .set_pkce_challenge(challenge);
        for scope in oidc.scopes.iter().filter(|s| *s != "openid") {
            request = request.add_scope(Scope::new(scope.clone()));
        }
        let (url, csrf, nonce) = request.url();
        store::sessions::begin_sign_in(
            &state.db,
            browser,
            csrf.secret(),
            nonce.secret(),
            verifier.secret(),
        )
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot record a sign-in under way");
            refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "The sign-in could not be recorded; try again.",
            )
        })?;
        Ok(url.to_string())
    }

    /// Completes a sign-in from the provider's callback: the pending sign-in of this browser,
    /// its state, the code exchanged, the ID token checked.
    async fn complete(
        &self,
        state: &AppState,
        browser: Option<&str>,
        query: &CallbackQuery,
    ) -> Result<Verified, Refusal> {
        let oidc = self
            .oidc()
            .ok_or_else(|| refused(StatusCode::NOT_FOUND, "no_provider", NO_PROVIDER))?;
        let pending = match browser {
            Some(b) => store::sessions::take_sign_in(&state.db, b)
                .await
                .map_err(|_| {
                    refused(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "store_unavailable",
                        "The sign-in could not be read; try again.",
                    )
                })?,
            None => None,
        };
        let Some(pending) = pending else {
            return Err(bad(
                "no_pending_sign_in",
                "This sign-in was not started in this browser, was used already, or took more \
                 than ten minutes. Start again.",
            ));
        };
        let given_state = query.state.as_deref().unwrap_or("");
        if !same(
            &store::sessions::state_digest(given_state),
            &pending.state_hash,
        ) {
            return Err(bad(
                "state_mismatch",
                "This answer from the identity provider does not belong to the sign-in started \
                 in this browser (its state differs). Start again.",
            ));
        }
        if query
            .iss
            .as_ref()
            .is_some_and(|iss| iss.trim_end_matches('/') != oidc.issuer.trim_end_matches('/'))
        {
            return Err(bad(
                "issuer_mismatch",
                "This answer names another identity provider than this console's. Start again.",
            ));
        }
        if let Some(error) = &query.error {
            let known = [
                "access_denied",
                "login_required",
                "consent_required",
                "interaction_required",
            ];
            let shown = if known.contains(&error.as_str()) {
                error.as_str()
            } else {
                "an error"
            };
            return Err(refused(
                StatusCode::UNAUTHORIZED,
                "provider_refused",
                format!("The identity provider did not sign you in ({shown}). Start again."),
            ));
        }
        let code = query
            .code
            .as_deref()
            .filter(|c| !c.is_empty() && c.len() <= 4096)
            .ok_or_else(|| bad("no_code", "The identity provider's answer has no code."))?;
        let metadata = self.metadata(oidc, false).await?;
        let client = Self::client(oidc, &metadata)?;
        let response = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|_| provider_down("it offers no token endpoint"))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
            .request_async(&self.http)
            .await
            .map_err(|e| {
                // The error names the OAuth error code or the parse failure, never a token.
                let kind = match &e {
                    openidconnect::RequestTokenError::ServerResponse(_) => "refused_by_provider",
                    openidconnect::RequestTokenError::Parse(_, _) => "unreadable_answer",
                    openidconnect::RequestTokenError::Request(_) => "unreachable",
                    _ => "other",
                };
                tracing::info!(kind, "sign-in refused: the code was not exchanged");
                bad(
                    "code_refused",
                    "The identity provider refused this sign-in's code (used already, expired, \
                     or not issued for this sign-in). Start again.",
                )
            })?;
        let id_token = response
            .id_token()
            .ok_or_else(|| bad("no_id_token", "The identity provider sent no ID token."))?
            .clone();
        drop(response); // the access token is never kept
        let nonce = Nonce::new(pending.nonce.clone());
        let algs = allowed_algs(&metadata);
        let check =
            |metadata: &ProviderMetadataWithLogout| -> Result<Verified, ClaimsVerificationError> {
                let client = Self::client(oidc, metadata)
                    .map_err(|r| ClaimsVerificationError::Other(r.code.to_string()))?;
                let verifier = client.id_token_verifier().set_allowed_algs(algs.clone());
                let claims = id_token.claims(&verifier, &nonce)?;
                let payload = payload_of(&id_token.to_string())
                    .ok_or_else(|| ClaimsVerificationError::Other("unreadable payload".into()))?;
                let display_name = claims
                    .name()
                    .and_then(|n| n.get(None))
                    .map(|n| n.as_str().to_string())
                    .or_else(|| claims.preferred_username().map(|u| u.as_str().to_string()))
                    .or_else(|| claims.email().map(|e| e.as_str().to_string()))
                    .unwrap_or_else(|| claims.subject().as_str().to_string());
                Ok(Verified {
                    issuer: claims.issuer().as_str().to_string(),
                    subject: claims.subject().as_str().to_string(),
                    display_name: display_name.chars().take(200).collect(),
                    email: claims
                        .email()
                        .map(|e| e.as_str().chars().take(320).collect()),
                    roles: roles_of(&payload, &oidc.role_claim, &oidc.roles),
                })
            };
        let verified = match check(&metadata) {
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                // An unknown key: the provider may have rotated its keys. Once.
                let fresh = self.refetch_keys(&metadata).await?;
                check(&fresh)
            }
            other => other,
        };
        verified.map_err(|e| {
            let (code, why) = match &e {
                ClaimsVerificationError::Expired(_) => ("id_token_expired", "it has expired"),
                ClaimsVerificationError::InvalidAudience(_) => {
                    ("id_token_audience", "it was issued for another application")
                }
                ClaimsVerificationError::InvalidIssuer(_) => {
                    ("id_token_issuer", "it was issued by another provider")
                }
                ClaimsVerificationError::InvalidNonce(_) => {
                    ("id_token_nonce", "it belongs to another sign-in (nonce)")
                }
                ClaimsVerificationError::SignatureVerification(
                    SignatureVerificationError::NoSignature
                    | SignatureVerificationError::DisallowedAlg(_)
                    | SignatureVerificationError::UnsupportedAlg(_),
                ) => (
                    "id_token_algorithm",
                    "it is unsigned or signed with an algorithm that is not accepted",
                ),
                ClaimsVerificationError::SignatureVerification(_) => {
                    ("id_token_signature", "its signature is not the provider's")
                }
                _ => ("id_token_invalid", "it is not valid"),
            };
            tracing::info!(
                reason = code,
                "sign-in refused: the ID token failed its checks"
            );
            bad(
                code,
                format!("The identity provider's ID token was refused: {why}. Start again."),
            )
        })
    }
}

const NO_PROVIDER: &str = "No identity provider is configured for this console.";

/// Constant-time comparison of two digests.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The asymmetric algorithms the provider says it signs ID tokens with (never `none`, never an
/// HMAC keyed by the client secret); RS256 when it lists none of them.
fn allowed_algs(metadata: &ProviderMetadataWithLogout) -> Vec<CoreJwsSigningAlgorithm> {
    use CoreJwsSigningAlgorithm as A;
    let accepted = [
        A::RsaSsaPkcs1V15Sha256,
        A::RsaSsaPkcs1V15Sha384,
        A::RsaSsaPkcs1V15Sha512,
        A::RsaSsaPssSha256,
        A::RsaSsaPssSha384,
        A::RsaSsaPssSha512,
        A::EcdsaP256Sha256,
        A::EcdsaP384Sha384,
        A::EdDsa,
    ];
    let algs: Vec<A> = metadata
        .id_token_signing_alg_values_supported()
        .iter()
        .filter(|a| accepted.contains(a))
        .cloned()
        .collect();
    if algs.is_empty() {
        vec![A::RsaSsaPkcs1V15Sha256]
    } else {
        algs
    }
}

/// The payload of a compact JWS (read only once its signature is verified).
fn payload_of(jwt: &str) -> Option<serde_json::Value> {
    let part = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The roles the claim at `path` maps to: the claim is a string or an array of strings; `path`
/// names a top-level claim, or a nested one by dots (`realm_access.roles`).
pub fn roles_of(payload: &serde_json::Value, path: &str, map: &[(String, String)]) -> Vec<Role> {
    let claim = payload.get(path).or_else(|| {
        path.split('.')
            .try_fold(payload, |v, key| v.get(key))
            .filter(|_| path.contains('.'))
    });
    let values: Vec<&str> = match claim {
        Some(serde_json::Value::String(s)) => vec![s.as_str()],
        Some(serde_json::Value::Array(items)) => items.iter().filter_map(|v| v.as_str()).collect(),
        _ => Vec::new(),
    };
    let mut roles: Vec<Role> = [Role::Requester, Role::Approver, Role::Auditor, Role::Admin]
        .into_iter()
        .filter(|role| {
            map.iter()
                .any(|(value, name)| name == role.as_str() && values.contains(&value.as_str()))
        })
        .collect();
    roles.dedup();
    roles
}

/// A 4xx page that says why the sign-in was refused (502 when the provider is unreachable).
fn refusal_page(sign_in: &SignIn, refusal: &Refusal) -> Result<HttpResponse, Failure> {
    let mut response = sign_in_page_with(sign_in, Some(&refusal.message), refusal.status)?;
    clear_pending(&mut response);
    Ok(response)
}

fn clear_pending(response: &mut HttpResponse) {
    let mut cookie = Cookie::new(PENDING_COOKIE, "");
    cookie.set_path("/auth/oidc");
    cookie.make_removal();
    let _ = response.add_cookie(&cookie);
}

/// Starts a sign-in at the provider.
#[get("/auth/oidc/login")]
pub async fn login(
    state: web::Data<AppState>,
    sign_in: web::Data<SignIn>,
    req: HttpRequest,
) -> Result<HttpResponse, Failure> {
    let browser = hex::encode(rand::random::<[u8; 32]>());
    let url = match sign_in.begin(&state, &browser).await {
        Ok(url) => url,
        Err(refusal) => return refusal_page(&sign_in, &refusal),
    };
    let secure = req.connection_info().scheme() == "https";
    // Lax, not Strict: the provider's redirect back is a cross-site navigation.
    let cookie = Cookie::build(PENDING_COOKIE, browser)
        .path("/auth/oidc")
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Lax)
        .max_age(actix_web::cookie::time::Duration::minutes(10))
        .finish();
    let mut response = HttpResponse::SeeOther()
        .insert_header((actix_web::http::header::LOCATION, url))
        .insert_header(("Cache-Control", "no-store"))
        .finish();
    response
        .add_cookie(&cookie)
        .map_err(|e| crate::app::error::ApiError::Internal(e.into()))?;
    Ok(response)
}

/// What the provider sends back.
#[derive(serde::Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    /// RFC 9207: the issuer of this answer, when the provider names it.
    iss: Option<String>,
}

/// The provider's answer: a session for the person, or a page that says why not.
#[get("/auth/oidc/callback")]
pub async fn callback(
    state: web::Data<AppState>,
    sign_in: web::Data<SignIn>,
    req: HttpRequest,
) -> Result<HttpResponse, Failure> {
    let query: CallbackQuery = match serde_urlencoded::from_str(req.query_string()) {
        Ok(q) => q,
        Err(_) => {
            return refusal_page(
                &sign_in,
                &bad("bad_callback", "This callback's query is not readable."),
            );
        }
    };
    let browser = req.cookie(PENDING_COOKIE).map(|c| c.value().to_string());
    let verified = match sign_in.complete(&state, browser.as_deref(), &query).await {
        Ok(v) => v,
        Err(refusal) => return refusal_page(&sign_in, &refusal),
    };
    let recorded = store::people::sign_in(
        &state.db,
        store::people::SignIn {
            issuer: &verified.issuer,
            subject: &verified.subject,
            display_name: &verified.display_name,
            email: verified.email.as_deref(),
            roles: &verified.roles,
        },
    )
    .await?;
    let Some((person, key)) = recorded else {
        tracing::info!(reason = "no_role", "sign-in refused: no mapped role");
        return refusal_page(
            &sign_in,
            &refused(
                StatusCode::FORBIDDEN,
                "no_role",
                "You signed in at the identity provider, but none of your groups gives you a \
                 role in this console. Ask your administrator to add you to one of its groups.",
            ),
        );
    };
    tracing::info!(%person, "person signed in");
    // A page that goes on to the console rather than a redirect: the session cookie is
    // SameSite=Strict, and a browser does not send it on a redirect chain that began at the
    // provider's site.
    let mut response = html(StatusCode::OK, SIGNED_IN.to_string());
    open_session(&state, &sign_in, &req, &mut response, key, Some(person)).await?;
    clear_pending(&mut response);
    Ok(response)
}

const SIGNED_IN: &str = "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta http-equiv=\"refresh\" content=\"0;url=/\"><title>Signed in · erasure</title></head>\
<body><main><h1>Signed in</h1><p><a id=\"continue\" href=\"/\">Continue to the console</a></p>\
</main></body></html>";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_come_from_a_string_an_array_or_a_nested_claim() {
        let map: Vec<(String, String)> = [
            ("officers", "requester"),
            ("dpo", "approver"),
            ("audit", "auditor"),
            ("platform", "admin"),
            ("dpo-deputies", "approver"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let token = serde_json::json!({
            "groups": ["dpo", "officers", "unrelated", 7],
            "g": "platform",
            "realm_access": {"roles": ["audit"]},
            "none": ["x"]
        });
        assert_eq!(
            roles_of(&token, "groups", &map),
            vec![Role::Requester, Role::Approver]
        );
        assert_eq!(roles_of(&token, "g", &map), vec![Role::Admin]);
        assert_eq!(
            roles_of(&token, "realm_access.roles", &map),
            vec![Role::Auditor]
        );
        assert!(roles_of(&token, "none", &map).is_empty());
        assert!(roles_of(&token, "missing", &map).is_empty());
    }
}
