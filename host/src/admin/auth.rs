//! The bearer token check, decided from the request head alone so that a refused
//! request's body is never read.

use http::HeaderMap;
use http::header::AUTHORIZATION;

use super::Reply;

/// The result of checking a request's bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Authorization {
    /// The right token.
    Granted,
    /// Missing or wrong token.
    Denied,
    /// The host has no token: mutating calls are all refused.
    NoTokenConfigured,
}

impl Authorization {
    /// Checks the `Authorization: Bearer <token>` header against `token`.
    pub(crate) fn check(token: Option<&str>, headers: &HeaderMap) -> Self {
        let Some(token) = token else { return Authorization::NoTokenConfigured };
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, presented)| presented.trim());
        match presented {
            Some(p) if constant_time_eq(p.as_bytes(), token.as_bytes()) => Authorization::Granted,
            _ => Authorization::Denied,
        }
    }

    /// `None` when granted, else the refusal to send.
    pub(crate) fn refusal(self) -> Option<Reply> {
        match self {
            Authorization::Granted => None,
            Authorization::Denied => Some(Reply::text(401, "missing or wrong bearer token")),
            Authorization::NoTokenConfigured => Some(Reply::text(
                403,
                "no admin token configured (set admin.token_file, admin.token or FERRY_ADMIN_TOKEN): admin calls are refused",
            )),
        }
    }
}

/// Compares without stopping at the first difference, so the time taken does not
/// tell how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_right_token_is_granted_whatever_the_scheme_case() {
        assert_eq!(Authorization::check(Some("s3cret"), &with("Bearer s3cret")), Authorization::Granted);
        assert_eq!(Authorization::check(Some("s3cret"), &with("bearer  s3cret ")), Authorization::Granted);
    }

    #[test]
    fn a_wrong_or_missing_token_is_denied() {
        assert_eq!(Authorization::check(Some("s3cret"), &with("Bearer s3cre")), Authorization::Denied);
        assert_eq!(Authorization::check(Some("s3cret"), &with("Basic s3cret")), Authorization::Denied);
        assert_eq!(Authorization::check(Some("s3cret"), &with("s3cret")), Authorization::Denied);
        assert_eq!(Authorization::check(Some("s3cret"), &HeaderMap::new()), Authorization::Denied);
    }

    #[test]
    fn without_a_configured_token_everything_is_refused() {
        let check = Authorization::check(None, &with("Bearer anything"));
        assert_eq!(check, Authorization::NoTokenConfigured);
        assert_eq!(check.refusal().map(|r| r.status), Some(403));
    }
}
