//! What the tool prints of the service's (or a hostile endpoint's) strings: control,
//! format (bidi overrides, zero-width), line-breaking and other invisible characters
//! escaped as `\u{…}`, and backslashes doubled, so nothing a caller stored in the audit
//! (a user id made of ANSI escape sequences, say) can move the cursor, clear the screen or
//! reorder what an auditor reads. `--json` prints the exact strings, JSON-escaped.

use std::borrow::Cow;
use std::fmt::Write;

use login_etl_core::event::text::is_invisible;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// `text` as it may be shown on a terminal.
pub fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if needs_escape(c) {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

fn needs_escape(c: char) -> bool {
    use GeneralCategory::*;
    c == '\\'
        || c.is_control()
        || is_invisible(c)
        || matches!(
            c.general_category(),
            Format | LineSeparator | ParagraphSeparator | Unassigned | PrivateUse | Surrogate
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_controls_and_bidi_overrides_are_shown_not_obeyed() {
        assert_eq!(escaped("alice"), "alice");
        assert_eq!(escaped("Prüfung 工单"), "Prüfung 工单");
        assert_eq!(escaped("\u{1b}[2J\u{1b}[Hclean"), "\\u{1b}[2J\\u{1b}[Hclean");
        assert_eq!(escaped("abc\u{202E}fed"), "abc\\u{202e}fed");
        assert_eq!(escaped("a\u{2066}b\u{2069}"), "a\\u{2066}b\\u{2069}");
        assert_eq!(escaped("line\nbreak\r\u{2028}"), "line\\u{a}break\\u{d}\\u{2028}");
        assert_eq!(escaped("zero\u{200B}width"), "zero\\u{200b}width");
        assert_eq!(escaped("\u{9b}31m"), "\\u{9b}31m", "C1 control sequence introducer");
        // A backslash cannot fake an escape.
        assert_eq!(escaped("\\u{1b}"), "\\\\u{1b}");
        for c in (0u32..=0x10FFFF).filter_map(char::from_u32) {
            let shown = escaped(&c.to_string()).into_owned();
            assert!(!shown.chars().any(|s| s.is_control() || is_invisible(s)), "U+{:04X}", c as u32);
        }
    }
}
