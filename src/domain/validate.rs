//! Parsing of what clients send. Each function returns the reason a value is refused, in words
//! that never repeat the value itself (it may be personal data).

/// An upstream id: a numeric string (UPSTREAM.md), at most 32 digits.
#[derive(Clone, PartialEq, Eq)]
pub struct TargetId(String);

impl TargetId {
    pub const MAX_LEN: usize = 32;

    pub fn parse(text: &str) -> Result<Self, &'static str> {
        let text = text.trim();
        if text.is_empty() {
            return Err("must not be empty");
        }
        if text.len() > Self::MAX_LEN {
            return Err("must be at most 32 digits");
        }
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err("must be a numeric upstream id (digits only)");
        }
        // "042" and "42" would get different pseudonyms for what may be one upstream id.
        if text.len() > 1 && text.starts_with('0') {
            return Err("must not start with 0 (upstream ids have no leading zeros)");
        }
        Ok(Self(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for TargetId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TargetId(<redacted>)")
    }
}

/// An opaque ticket reference. Refused when it looks like personal data.
pub fn external_reference(text: &str) -> Result<String, &'static str> {
    let text = text.trim();
    if text.is_empty() {
        return Err("must not be empty when given");
    }
    if text.chars().count() > 128 {
        return Err("must be at most 128 characters");
    }
    if text.chars().any(|c| c.is_control()) {
        return Err("must not contain control characters");
    }
    if looks_like_email(text) {
        return Err("looks like an e-mail address; use an opaque ticket id, not personal data");
    }
    if looks_like_iban(text) {
        return Err("looks like an IBAN; use an opaque ticket id, not personal data");
    }
    if looks_like_phone(text) {
        return Err("looks like a phone number; use an opaque ticket id, not personal data");
    }
    Ok(text.to_string())
}

fn looks_like_email(text: &str) -> bool {
    text.split_whitespace().any(|word| {
        let mut parts = word.splitn(2, '@');
        match (parts.next(), parts.next()) {
            (Some(local), Some(domain)) => !local.is_empty() && domain.contains('.'),
            _ => false,
        }
    })
}

fn looks_like_iban(text: &str) -> bool {
    let compact: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect::<String>()
        .to_ascii_uppercase();
    // Look at every window that starts with two letters and two digits.
    let bytes = compact.as_bytes();
    (0..bytes.len()).any(|start| {
        let rest = &bytes[start..];
        rest.len() >= 15
            && rest[0].is_ascii_uppercase()
            && rest[1].is_ascii_uppercase()
            && rest[2].is_ascii_digit()
            && rest[3].is_ascii_digit()
            && (15..=rest.len().min(34)).any(|len| {
                rest[..len].iter().all(|b| b.is_ascii_alphanumeric())
                    && iban_checksum_ok(&rest[..len])
            })
    })
}

fn iban_checksum_ok(iban: &[u8]) -> bool {
    let rearranged = iban[4..].iter().chain(&iban[..4]);
    let mut remainder: u32 = 0;
    for b in rearranged {
        let value = match b {
            b'0'..=b'9' => (b - b'0') as u32,
            b'A'..=b'Z' => (b - b'A') as u32 + 10,
            _ => return false,
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

fn looks_like_phone(text: &str) -> bool {
    // A run of 9 to 15 digits, allowing spaces, dots, dashes and brackets between them, that
    // starts with + or 0 (international or national dialling).
    let chars: Vec<char> = text.chars().collect();
    for start in 0..chars.len() {
        if chars[start] != '+' && chars[start] != '0' {
            continue;
        }
        if start > 0 && chars[start - 1].is_ascii_alphanumeric() {
            continue;
        }
        let mut digits = 0;
        for c in &chars[start..] {
            if c.is_ascii_digit() {
                digits += 1;
            } else if matches!(c, ' ' | '.' | '-' | '(' | ')' | '+') {
                continue;
            } else {
                break;
            }
        }
        if (9..=15).contains(&digits) {
            return true;
        }
    }
    false
}

/// A short free-text field written by staff (hold notes, extension reasons): required, bounded,
/// and screened like references, since it outlives the request.
pub fn free_text(text: &str, max_chars: usize) -> Result<String, &'static str> {
    let text = text.trim();
    if text.is_empty() {
        return Err("must not be empty");
    }
    if text.chars().count() > max_chars {
        return Err("is too long");
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err("must not contain control characters");
    }
    if looks_like_email(text) || looks_like_iban(text) || looks_like_phone(text) {
        return Err(
            "looks like it holds personal data (an e-mail, IBAN or phone number); describe the reason without it",
        );
    }
    Ok(text.to_string())
}

/// A time a client may send: years 1 to 9999, as RFC 3339 writes them. chrono also reads
/// ISO 8601's signed years (`-10000-01-01T00:00:00Z`), which PostgreSQL cannot store.
pub fn timestamp(
    t: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, &'static str> {
    use chrono::Datelike;
    if (1..=9999).contains(&t.year()) {
        Ok(t)
    } else {
        Err("must be a time between the years 1 and 9999")
    }
}

/// Whether a client-chosen name (an unknown field or column) may be repeated in an error body:
/// short, and not looking like personal data.
pub fn safe_to_echo(name: &str) -> bool {
    name.chars().count() <= 64 && free_text(name, 64).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_ids_are_numeric_strings() {
        assert!(TargetId::parse("12345").is_ok());
        assert_eq!(TargetId::parse(" 42 ").unwrap().as_str(), "42");
        assert!(TargetId::parse("").is_err());
        assert!(TargetId::parse("12a").is_err());
        assert!(TargetId::parse("042").is_err());
        assert!(TargetId::parse("0").is_ok());
        assert!(TargetId::parse(&"1".repeat(33)).is_err());
    }

    #[test]
    fn personal_data_in_references_is_refused() {
        assert!(external_reference("TICKET-2041").is_ok());
        assert!(external_reference("JIRA-12345678").is_ok());
        assert!(external_reference("ZD#998877").is_ok());
        assert!(external_reference("jean.dupont@example.fr").is_err());
        assert!(external_reference("see marie@exemple.com please").is_err());
        assert!(external_reference("FR76 3000 6000 0112 3456 7890 189").is_err());
        assert!(external_reference("FR7630006000011234567890189").is_err());
        assert!(external_reference("+33 6 12 34 56 78").is_err());
        assert!(external_reference("06.12.34.56.78").is_err());
        assert!(external_reference("").is_err());
        assert!(external_reference(&"x".repeat(129)).is_err());
    }
}
