//! Who may do what: the roles an action needs, checked the same way for an API key, a console
//! session and the command line (admin always may).

use actix_web::http::StatusCode;

use super::error::ApiError;
use crate::domain::Role;
use crate::store::keys::Principal;

/// Whether `principal` may act as one of `roles` (admin always may).
pub fn allowed(principal: &Principal, roles: &[Role]) -> bool {
    principal
        .roles
        .iter()
        .any(|r| *r == Role::Admin || roles.contains(r))
}

/// Refuses with 403 unless `principal` has one of `roles` (admin always may).
pub fn require<'a>(principal: &'a Principal, roles: &[Role]) -> Result<&'a Principal, ApiError> {
    if allowed(principal, roles) {
        Ok(principal)
    } else {
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(ApiError::client(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this needs the role {} ({} {})",
                if names.is_empty() {
                    "admin".to_string()
                } else {
                    names.join(" or ")
                },
                if principal.person.is_some() {
                    "you hold:"
                } else {
                    "this key is"
                },
                principal.roles_text()
            ),
        ))
    }
}

/// Who may read requests.
pub const READERS: &[Role] = &[Role::Requester, Role::Approver, Role::Auditor];
