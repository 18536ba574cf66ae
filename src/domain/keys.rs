//! What a new API key may be: its role, a label of 1 to 100 characters of free text, and an
//! expiry of 1 to 3,660 days. The one set of limits of every way to make a key (the CLI, the
//! console, the demo). Pure: no I/O.

use chrono::{DateTime, Duration, Utc};

use super::Role;
use super::validate;

/// The longest label.
pub const MAX_LABEL_CHARS: usize = 100;
/// The longest life a key may be given, in days.
pub const MAX_EXPIRY_DAYS: i64 = 3660;

/// A key to make, valid by construction.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub role: Role,
    pub label: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// Which field was refused, and why.
pub type Refused = (&'static str, &'static str);

impl NewKey {
    /// A key of `role` labelled `label`, expiring `expires_in_days` after `now` (never when
    /// `None`); refuses an empty, too long or personal-looking label (`label`) and a life
    /// outside 1 to 3,660 days (`expires_in_days`).
    pub fn new(
        role: Role,
        label: &str,
        expires_in_days: Option<i64>,
        now: DateTime<Utc>,
    ) -> Result<Self, Refused> {
        let label = validate::free_text(label, MAX_LABEL_CHARS).map_err(|why| ("label", why))?;
        let expires_at = match expires_in_days {
            None => None,
            Some(days) if (1..=MAX_EXPIRY_DAYS).contains(&days) => Some(now + Duration::days(days)),
            Some(_) => return Err(("expires_in_days", "must be 1 to 3660 days")),
        };
        Ok(NewKey {
            role,
            label,
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_has_a_short_label_and_a_bounded_life() {
        let now = Utc::now();
        let key = NewKey::new(Role::Auditor, " ops team ", Some(30), now).unwrap();
        assert_eq!(key.label, "ops team");
        assert_eq!(key.expires_at, Some(now + Duration::days(30)));
        assert!(
            NewKey::new(Role::Admin, "never", None, now)
                .unwrap()
                .expires_at
                .is_none()
        );
        assert_eq!(
            NewKey::new(Role::Admin, "  ", None, now).unwrap_err().0,
            "label"
        );
        let long = "x".repeat(MAX_LABEL_CHARS + 1);
        assert_eq!(
            NewKey::new(Role::Admin, &long, None, now).unwrap_err().0,
            "label"
        );
        for days in [0, -1, MAX_EXPIRY_DAYS + 1] {
            let refused = NewKey::new(Role::Admin, "k", Some(days), now).unwrap_err();
            assert_eq!(refused.0, "expires_in_days");
        }
        assert!(NewKey::new(Role::Admin, "k", Some(MAX_EXPIRY_DAYS), now).is_ok());
    }
}
