//! Making guest-provided text safe to print, and short digests for logs.

/// Truncates `text` to at most `max_chars` characters and replaces control
/// characters (terminal escapes, carriage returns, NULs) with `�`, so a tenant cannot
/// forge log lines or drive an operator's terminal.
pub fn sanitize(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars * 4));
    for (n, c) in text.chars().enumerate() {
        if n == max_chars {
            out.push_str("…[truncated]");
            break;
        }
        out.push(if c.is_control() && c != '\t' { '\u{fffd}' } else { c });
    }
    out
}

/// The first 12 hex digits of a digest: enough to tell versions apart in logs.
pub fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::sanitize;

    #[test]
    fn strips_escapes_and_newlines() {
        assert_eq!(sanitize("a\x1b[31mb\nc\r", 100), "a\u{fffd}[31mb\u{fffd}c\u{fffd}");
    }

    #[test]
    fn truncates_on_character_boundaries() {
        assert_eq!(sanitize("ééé", 2), "éé…[truncated]");
    }
}
