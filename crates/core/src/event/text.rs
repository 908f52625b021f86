//! Rules for text that people read: what counts as an invisible character, and what a
//! reason for an audited act must look like.

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// A code point that renders as nothing (or changes how its neighbours render) but makes
/// two strings differ: format characters (zero-width space and joiners, BOM, soft hyphen,
/// bidi controls, tags), variation selectors, the combining grapheme joiner and the
/// Hangul fillers.
pub fn is_invisible(c: char) -> bool {
    c.general_category() == GeneralCategory::Format
        || matches!(c,
            '\u{034F}'                      // combining grapheme joiner
            | '\u{115F}' | '\u{1160}'       // Hangul choseong / jungseong fillers
            | '\u{3164}' | '\u{FFA0}'       // Hangul fillers
            | '\u{180B}'..='\u{180D}'       // Mongolian free variation selectors
            | '\u{FE00}'..='\u{FE0F}'       // variation selectors
            | '\u{E0100}'..='\u{E01EF}') // variation selectors supplement
}

/// Why a reason for an audited act was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ReasonError {
    #[error("a reason is required: every reveal and erasure is audited with who, when, what and why")]
    Missing,
    #[error("a reason needs at least {MIN_REASON_CHARS} visible characters")]
    TooShort,
    #[error("a reason may not contain control or invisible characters")]
    Hidden,
    #[error("a reason may be at most {MAX_REASON_CHARS} characters")]
    TooLong,
}

pub const MIN_REASON_CHARS: usize = 8;
pub const MAX_REASON_CHARS: usize = 500;

/// A reason as the audit records it: trimmed, at least 8 visible characters, no control
/// or invisible characters, at most 500 characters.
pub fn audit_reason(reason: Option<&str>) -> Result<&str, ReasonError> {
    let reason = reason.map(str::trim).filter(|r| !r.is_empty()).ok_or(ReasonError::Missing)?;
    if reason.chars().any(|c| c.is_control() || is_invisible(c)) {
        return Err(ReasonError::Hidden);
    }
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(ReasonError::TooLong);
    }
    if reason.chars().filter(|c| !c.is_whitespace()).count() < MIN_REASON_CHARS {
        return Err(ReasonError::TooShort);
    }
    Ok(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_characters_are_recognised() {
        for c in [
            '\u{200B}',
            '\u{200D}',
            '\u{FEFF}',
            '\u{00AD}',
            '\u{202E}',
            '\u{2066}',
            '\u{E0041}',
            '\u{FE0F}',
            '\u{3164}',
        ] {
            assert!(is_invisible(c), "U+{:04X}", c as u32);
        }
        for c in ['a', 'é', '😀', ' ', '-', '中'] {
            assert!(!is_invisible(c), "U+{:04X}", c as u32);
        }
    }

    /// What `column_text`'s ASCII fast path relies on.
    #[test]
    fn no_ascii_character_is_invisible_and_ascii_controls_are_the_control_characters() {
        for byte in 0u8..128 {
            let c = char::from(byte);
            assert!(!is_invisible(c), "U+{byte:04X}");
            assert_eq!(c.is_control(), byte.is_ascii_control(), "U+{byte:04X}");
        }
    }

    #[test]
    fn reasons_must_be_visible_and_long_enough() {
        assert_eq!(audit_reason(Some("  ticket 4711  ")), Ok("ticket 4711"));
        assert_eq!(audit_reason(None), Err(ReasonError::Missing));
        assert_eq!(audit_reason(Some("   ")), Err(ReasonError::Missing));
        assert_eq!(audit_reason(Some(".")), Err(ReasonError::TooShort));
        assert_eq!(audit_reason(Some("a b c d e f g")), Err(ReasonError::TooShort));
        assert_eq!(audit_reason(Some("ticket\u{200B}4711")), Err(ReasonError::Hidden));
        assert_eq!(
            audit_reason(Some("\u{200B}\u{200B}\u{200B}\u{200B}\u{200B}\u{200B}\u{200B}\u{200B}")),
            Err(ReasonError::Hidden)
        );
        assert_eq!(audit_reason(Some("ticket\n4711")), Err(ReasonError::Hidden));
        assert_eq!(audit_reason(Some(&"x".repeat(501))), Err(ReasonError::TooLong));
    }
}
