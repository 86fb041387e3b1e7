//! Cutting text to a size: manager answers, step failures, pod messages and logs are kept or
//! shown only up to a bound, and a cut must fall on a character boundary.

/// The longest start of `text` that is at most `limit` bytes and ends on a character boundary.
pub fn prefix(text: &str, limit: usize) -> &str {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `text`, cut at `limit` bytes (on a character boundary) and marked when it was cut.
pub fn bounded(text: &str, limit: usize) -> String {
    const MARK: &str = " [truncated]";
    if text.len() <= limit {
        return text.to_string();
    }
    format!("{}{MARK}", prefix(text, limit.saturating_sub(MARK.len())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_fall_on_character_boundaries_and_are_marked() {
        assert_eq!(prefix("密封扇区", 4), "密");
        assert_eq!(prefix("abc", 10), "abc");
        assert_eq!(bounded("abc", 10), "abc");
        let cut = bounded(&"密".repeat(100), 40);
        assert!(cut.len() <= 40 && cut.ends_with(" [truncated]"), "{cut}");
    }
}
