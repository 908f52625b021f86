//! What the service answers is partly text from outside: a quarantined body is whatever a
//! sender put on the queue. Before it reaches a terminal, every character that could steer
//! it (C0 and C1 controls such as ESC, which starts ANSI sequences; DEL; bidi controls and
//! other invisible characters that reorder or hide text; line and paragraph separators) is
//! printed as a visible `\u{…}` escape, and so is what renders as nothing or as anything
//! (unassigned and private-use code points). In text, a backslash is doubled, so no text can
//! pass itself off as an escape. The invisible set is core's (`is_invisible`).

use std::borrow::Cow;

use login_etl_core::event::text::is_invisible;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// A character that must not reach a terminal as it is.
pub fn needs_escape(c: char) -> bool {
    use GeneralCategory::*;
    c.is_control()
        || is_invisible(c)
        || matches!(
            c.general_category(),
            Format | LineSeparator | ParagraphSeparator | Unassigned | PrivateUse | Surrogate
        )
}

/// `text` with each such character as `\u{XXXX}` (line breaks and tabs too: one record,
/// one line) and each backslash doubled.
pub fn text(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c == '\\' || needs_escape(c)) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c == '\\' {
            escaped.push_str("\\\\");
        } else if needs_escape(c) {
            escaped.push_str(&format!("\\u{{{:04x}}}", c as u32));
        } else {
            escaped.push(c);
        }
    }
    Cow::Owned(escaped)
}

/// `value` as JSON whose every such character is a JSON `\uXXXX` escape (serde escapes
/// only C0 controls): still the same JSON to a parser, inert in a terminal.
pub fn json(value: &serde_json::Value) -> String {
    let raw = value.to_string();
    if !raw.chars().any(needs_escape) {
        return raw;
    }
    // Outside strings JSON is ASCII without controls, so any such character is inside a
    // string, where `\uXXXX` (a surrogate pair above U+FFFF) means the same character.
    let mut escaped = String::with_capacity(raw.len() + 16);
    for c in raw.chars() {
        if needs_escape(c) {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                escaped.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            escaped.push(c);
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &str =
        "a\u{1b}[2J\u{1b}]0;pwned\u{7}b\u{9b}31m\u{202e}cba\u{2066}\u{200b}\r\n\u{7f}\u{e0041}\u{2028}z";

    #[test]
    fn nothing_that_steers_a_terminal_is_left_and_the_rest_is_kept() {
        let shown = text(HOSTILE);
        assert!(!shown.chars().any(needs_escape), "{shown}");
        assert!(!shown.contains('\u{1b}') && !shown.contains('\u{9b}') && !shown.contains('\u{202e}'));
        assert_eq!(
            shown,
            "a\\u{001b}[2J\\u{001b}]0;pwned\\u{0007}b\\u{009b}31m\\u{202e}cba\\u{2066}\\u{200b}\\u{000d}\\u{000a}\\u{007f}\\u{e0041}\\u{2028}z"
        );
        assert!(matches!(text(r#"{"ip": "10.0.0.1", "é": "中"}"#), Cow::Borrowed(_)));
        // A backslash cannot fake an escape; unassigned and private-use code points show.
        assert_eq!(text("\\u{001b}"), "\\\\u{001b}");
        assert_eq!(text("a\u{0378}b\u{e000}"), "a\\u{0378}b\\u{e000}");
        for c in (0u32..=0x10FFFF).filter_map(char::from_u32) {
            let shown = text(&c.to_string()).into_owned();
            assert!(!shown.chars().any(needs_escape), "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn escaped_json_is_the_same_json() {
        let value = serde_json::json!({"body": HOSTILE, "n": 1});
        let printed = json(&value);
        assert!(!printed.chars().any(needs_escape), "{printed}");
        assert_eq!(serde_json::from_str::<serde_json::Value>(&printed).expect("still JSON"), value);
    }
}
