//! Sign-in, sign-out, and the checks every console form passes: the session cookie, a CSRF token
//! bound to it, and `Origin`.
//!
//! The CSRF token is HMAC-SHA256 of a fixed label keyed by the session token: only the server
//! and the holder of the HttpOnly cookie can make it, and it changes with each session. Never
//! logs a key, a token or a form's values.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::error::InternalError;
use actix_web::http::StatusCode;
use actix_web::{FromRequest, HttpRequest, HttpResponse, dev, post, web};
use askama::Template;
use futures::future::LocalBoxFuture;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::oidc::SignIn;
use super::{Failure, html, see_other};
use crate::api::AppState;
use crate::api::auth::SESSION_COOKIE;
use crate::app::error::ApiError;
use crate::store;
use crate::store::keys::Principal;

/// A signed-in browser.
pub struct Session {
    pub principal: Principal,
    /// The person's display name (for the page only), when a person is behind the session.
    pub name: Option<String>,
    /// Whether the session was opened by the OpenID Provider (not with a key).
    pub through_provider: bool,
    /// The token every form of this session carries.
    pub csrf: String,
    /// The pause switch of upstream work, shown on every page while it is on.
    pub pause: store::pause::Pause,
    token: String,
}

fn csrf_of(token: &str) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(token.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(b"erasure console csrf v1");
    hex::encode(mac.finalize().into_bytes())
}

/// The session of this request's cookie, while it and its key are live.
pub async fn current(state: &AppState, req: &HttpRequest) -> Result<Option<Session>, Failure> {
    let Some(cookie) = req.cookie(SESSION_COOKIE) else {
        return Ok(None);
    };
    let token = cookie.value().to_string();
    let Some(signed) = store::sessions::signed_in(&state.db, &token).await? else {
        return Ok(None);
    };
    let mut pause = store::pause::current(&state.db).await?;
    super::name_people(state, pause.by.iter_mut()).await?;
    Ok(Some(Session {
        principal: signed.principal,
        name: signed.name,
        through_provider: signed.through_provider,
        csrf: csrf_of(&token),
        pause,
        token,
    }))
}

/// A console page's signed-in session: a handler that takes one is only run for a signed-in
/// browser; any other is sent to the sign-in page (303 to `/`).
impl FromRequest for Session {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut dev::Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = req
                .app_data::<web::Data<AppState>>()
                .ok_or_else(|| Failure(ApiError::Internal(anyhow::anyhow!("no AppState"))))?;
            match current(state, &req).await? {
                Some(session) => Ok(session),
                None => Err(InternalError::from_response("not signed in", see_other("/")).into()),
            }
        })
    }
}

/// The largest console form.
const FORM_LIMIT: usize = 64 * 1024;

/// A posted console form: its signed-in session and its url-encoded fields, once it is known to
/// come from the console's own page (`Origin`) of this session (CSRF token). The one way a
/// console handler reads a form (an upload, being multipart, checks the same with
/// [`Session::check_form`]).
pub struct Form {
    pub session: Session,
    pub fields: Vec<(String, String)>,
}

impl FromRequest for Form {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, actix_web::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut dev::Payload) -> Self::Future {
        let session = Session::from_request(req, payload);
        let (req, payload) = (req.clone(), payload.take());
        Box::pin(async move {
            let session = session.await?;
            let body = crate::api::input::body(payload, FORM_LIMIT)
                .await
                .map_err(Failure)?;
            let fields = session.form(&req, &body)?;
            Ok(Form { session, fields })
        })
    }
}

fn forbidden(message: &str) -> Failure {
    Failure(ApiError::client(
        StatusCode::FORBIDDEN,
        "forbidden",
        message,
    ))
}

/// Refuses a POST whose `Origin` is not this service (a browser sends it with every POST).
pub fn same_origin(req: &HttpRequest) -> Result<(), Failure> {
    let info = req.connection_info();
    let origin = req
        .headers()
        .get(actix_web::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| forbidden("this form must come from the console's own page (no Origin)"))?;
    let ours = format!("{}://{}", info.scheme(), info.host());
    if origin != ours {
        return Err(forbidden(
            "this form must come from the console's own page (Origin differs)",
        ));
    }
    Ok(())
}

impl Session {
    /// Refuses a form unless it comes from this origin and carries this session's token.
    pub fn check_form(&self, req: &HttpRequest, csrf: Option<&str>) -> Result<(), Failure> {
        same_origin(req)?;
        let given = csrf.unwrap_or("").as_bytes();
        let ours = self.csrf.as_bytes();
        let same: bool = given.ct_eq(ours).into();
        if !same {
            return Err(forbidden(
                "this form's CSRF token is missing or stale: reload the page and try again",
            ));
        }
        Ok(())
    }

    /// A posted url-encoded form's fields, once its origin and CSRF token are checked.
    pub fn form(&self, req: &HttpRequest, body: &[u8]) -> Result<Vec<(String, String)>, Failure> {
        let fields = form_fields(body)?;
        self.check_form(req, field(&fields, "csrf"))?;
        Ok(fields)
    }

    /// What every page of this session shows around its content.
    pub fn chrome(&self, title: impl Into<String>) -> super::Chrome {
        let mut chrome = super::Chrome::new(&self.principal, &self.csrf, title);
        chrome.name = self.name.clone();
        chrome.paused = self.pause.paused.then(|| super::Paused {
            since: self
                .pause
                .since
                .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                .unwrap_or_default(),
            by: self.pause.by.clone().unwrap_or_default(),
            reason: self.pause.reason.clone().unwrap_or_default(),
        });
        chrome
    }

    /// Refuses with 403 unless the session's key has one of `roles` (admin always may).
    pub fn require(&self, roles: &[crate::domain::Role]) -> Result<&Principal, Failure> {
        Ok(crate::app::auth::require(&self.principal, roles)?)
    }
}

/// The fields of an url-encoded form (at most 64 KiB).
pub fn form_fields(body: &[u8]) -> Result<Vec<(String, String)>, Failure> {
    if body.len() > FORM_LIMIT {
        return Err(Failure(ApiError::client(
            StatusCode::PAYLOAD_TOO_LARGE,
            "form_too_large",
            "this form is larger than 64 KiB",
        )));
    }
    Ok(form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect())
}

/// One field of a form (the first of that name), trimmed; `None` when absent or empty.
pub fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

#[derive(Template)]
#[template(path = "signin.html")]
pub struct SignInPage<'a> {
    pub message: Option<&'a str>,
    /// "Sign in with <provider>", when one is configured.
    pub provider: Option<&'a str>,
    /// Whether the API key form is shown.
    pub key_sign_in: bool,
    pub session_hours: u32,
}

/// The sign-in page (401 with its message when a key was refused).
pub fn sign_in_page(sign_in: &SignIn, message: Option<&str>) -> Result<HttpResponse, Failure> {
    let status = if message.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    sign_in_page_with(sign_in, message, status)
}

/// The sign-in page with a message and its status.
pub fn sign_in_page_with(
    sign_in: &SignIn,
    message: Option<&str>,
    status: StatusCode,
) -> Result<HttpResponse, Failure> {
    let body = SignInPage {
        message,
        provider: sign_in.provider_name(),
        key_sign_in: sign_in.settings.key_sign_in,
        session_hours: sign_in.settings.session_hours,
    }
    .render()
    .map_err(anyhow::Error::from)?;
    Ok(html(status, body))
}

/// Opens a session for `key` (a person's personal key, with `person`) and sets its cookie on
/// `response`.
pub async fn open_session(
    state: &AppState,
    sign_in: &SignIn,
    req: &HttpRequest,
    response: &mut HttpResponse,
    key: uuid::Uuid,
    person: Option<uuid::Uuid>,
) -> Result<(), Failure> {
    let hours = i64::from(sign_in.settings.session_hours);
    let (token, _) =
        store::sessions::start(&state.db, key, person, chrono::Duration::hours(hours)).await?;
    let secure = req.connection_info().scheme() == "https";
    let cookie = Cookie::build(SESSION_COOKIE, token)
        .path("/")
        .http_only(true)
        .secure(secure)
        .same_site(SameSite::Strict)
        .max_age(actix_web::cookie::time::Duration::hours(hours))
        .finish();
    response
        .add_cookie(&cookie)
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(())
}

/// Signs in with an API key sent by the form: opens a session and sets its cookie. Refused when
/// key sign-in is off (a provider is configured and `ERASURE_CONSOLE_KEY_SIGNIN` is not true).
#[post("/login")]
pub async fn login(
    state: web::Data<AppState>,
    sign_in: web::Data<SignIn>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, Failure> {
    same_origin(&req)?;
    if !sign_in.settings.key_sign_in {
        return sign_in_page_with(
            &sign_in,
            Some(
                "Signing in with an API key is turned off here: sign in with your identity provider.",
            ),
            StatusCode::FORBIDDEN,
        );
    }
    let fields = form_fields(&body)?;
    let key = field(&fields, "key").unwrap_or("").to_string();
    let Some(principal) = state.keys.submit(key).await? else {
        return sign_in_page(&sign_in, Some("Unknown, revoked or expired API key."));
    };
    let mut response = see_other("/");
    open_session(
        &state,
        &sign_in,
        &req,
        &mut response,
        principal.key_id,
        None,
    )
    .await?;
    Ok(response)
}

/// Signs out: ends the session and clears the cookie; a person's session is ended at the
/// provider too when it offers an end-session endpoint (the browser is sent there).
#[post("/logout")]
pub async fn logout(
    state: web::Data<AppState>,
    sign_in: web::Data<SignIn>,
    req: HttpRequest,
    body: web::Bytes,
) -> Result<HttpResponse, Failure> {
    let mut at_provider = None;
    if let Some(session) = current(&state, &req).await? {
        session.form(&req, &body)?;
        store::sessions::end(&state.db, &session.token).await?;
        if session.through_provider {
            at_provider = sign_in.end_session_url().await;
        }
    }
    // A page that goes on to the provider rather than a redirect: the console's CSP
    // (`form-action 'self'`) stops a form's redirect to another origin.
    let mut response = match &at_provider {
        Some(url) => {
            let url = url
                .replace('&', "&amp;")
                .replace('"', "&quot;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            html(
                StatusCode::OK,
                format!(
                    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
                     <meta http-equiv=\"refresh\" content=\"0;url={url}\">\
                     <title>Signed out · erasure</title></head><body><main><h1>Signed out</h1>\
                     <p><a id=\"provider-sign-out\" href=\"{url}\">End the session at the \
                     identity provider too</a></p></main></body></html>"
                ),
            )
        }
        None => see_other("/"),
    };
    let mut cookie = Cookie::new(SESSION_COOKIE, "");
    cookie.set_path("/");
    cookie.make_removal();
    response
        .add_cookie(&cookie)
        .map_err(|e| ApiError::Internal(e.into()))?;
    Ok(response)
}
