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
    #[error("a reason needs at least {MIN_REASON_CHARS} letters or digits")]
    TooShort,
    #[error(
        "a reason may not contain control, invisible, unassigned, private-use, blank-looking or line-breaking characters"
    )]
    Hidden,
    #[error("a reason may be at most {MAX_REASON_CHARS} characters")]
    TooLong,
}

pub const MIN_REASON_CHARS: usize = 8;
pub const MAX_REASON_CHARS: usize = 500;

/// A reason as the audit records it: trimmed, at most 500 characters, at least 8 letters
/// or digits, and nothing an auditor's screen would not show as written: no control,
/// format or other default-ignorable character, nothing unassigned or private-use, no
/// character that renders blank without being a space, no line or paragraph break.
pub fn audit_reason(reason: Option<&str>) -> Result<&str, ReasonError> {
    let reason = reason.map(str::trim).filter(|r| !r.is_empty()).ok_or(ReasonError::Missing)?;
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(ReasonError::TooLong);
    }
    if reason.chars().any(hidden_in_reason) {
        return Err(ReasonError::Hidden);
    }
    if reason.chars().filter(|c| is_letter_or_digit(*c)).count() < MIN_REASON_CHARS {
        return Err(ReasonError::TooShort);
    }
    Ok(reason)
}

fn is_letter_or_digit(c: char) -> bool {
    use GeneralCategory::*;
    matches!(
        c.general_category(),
        UppercaseLetter
            | LowercaseLetter
            | TitlecaseLetter
            | ModifierLetter
            | OtherLetter
            | DecimalNumber
            | LetterNumber
            | OtherNumber
    )
}

fn hidden_in_reason(c: char) -> bool {
    use GeneralCategory::*;
    c.is_control()
        || is_invisible(c)
        || is_default_ignorable(c)
        || matches!(
            c.general_category(),
            Unassigned | PrivateUse | Surrogate | LineSeparator | ParagraphSeparator
        )
        || matches!(
            c,
            '\u{2800}'                      // braille pattern blank
            | '\u{1D159}'
        ) // musical symbol null notehead
}

/// Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt, Unicode 16): what
/// renders as nothing when a font has no glyph for it, assigned or not.
fn is_default_ignorable(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}'
        | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{206F}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFF8}' | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E0FFF}')
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
        // Letters or digits, not just anything visible.
        assert_eq!(audit_reason(Some("!!!!!!!!!!!!")), Err(ReasonError::TooShort));
        assert_eq!(audit_reason(Some("ticket 47")), Ok("ticket 47"));
        assert_eq!(audit_reason(Some("Prüfung Nr 1")), Ok("Prüfung Nr 1"));
        assert_eq!(audit_reason(Some("工单编号一二三四")), Ok("工单编号一二三四"));
    }

    /// What a red team got accepted as reasons that look blank on an auditor's screen.
    #[test]
    fn reasons_that_look_blank_or_hide_characters_are_refused() {
        let blank_looking = [
            "\u{2800}".repeat(8),
            "ticket\u{2065}4711".to_owned(),
            "ticket\u{FFF0}4711".to_owned(),
            "ticket\u{E0080}4711".to_owned(),
            "ticket\u{17B4}4711".to_owned(),
            "ticket\u{1D159}4711".to_owned(),
            "ticket\u{E000}4711".to_owned(),
            "ticket\u{2028}4711".to_owned(),
            "ticket\u{2029}4711".to_owned(),
            "ticket\u{0378}4711".to_owned(),
            "ticket\u{180E}4711".to_owned(),
            "ticket\u{1D175}4711".to_owned(),
        ];
        for reason in &blank_looking {
            assert_eq!(
                audit_reason(Some(reason)),
                Err(ReasonError::Hidden),
                "{:?}",
                reason.escape_unicode().to_string()
            );
        }
        // A reason of blank-looking characters around a few letters is still too short.
        assert_eq!(audit_reason(Some("a\u{3000}b\u{3000}c")), Err(ReasonError::TooShort));
    }
}
