//! The rule for display names: what a person may be called in `new_user`, `ready` and
//! `/clients`. It owns the check only; `DisplayName` in the registry holds the result.
//!
//! Names are shown to other people, so beyond length and control characters we refuse what
//! makes a name lie about itself: Unicode format characters (general category Cf: bidi overrides
//! such as U+202E that reverse the text after them, zero-width spaces and joiners, the BOM) and
//! the line and paragraph separators U+2028/U+2029, which break lines like `\n` but are not
//! control characters. Surrounding whitespace is trimmed, so a name of only spaces is empty.
//!
//! # Config
//! None: the 64-character limit is part of the API contract (openapi.yaml), not a flag.
#![cfg_attr(
    not(test),
    expect(
        dead_code,
        reason = "wired into helo after the registry refactor (issue 10)"
    )
)]

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Longest name accepted, in characters (Unicode scalar values), after trimming.
pub(crate) const MAX_NAME_CHARS: usize = 64;

/// Why a display name was refused. `Display` is the message sent to the client with the
/// `invalid_name` error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NameError {
    /// Empty, or nothing but whitespace.
    #[error("name must not be empty or only whitespace")]
    Empty,
    /// More than [`MAX_NAME_CHARS`] characters after trimming.
    #[error("name must be at most 64 characters")]
    TooLong,
    /// A control character (Cc), such as a newline or escape.
    #[error("name must not contain control characters")]
    Control,
    /// An invisible or text-reordering character: a format character (Cf, e.g. U+202E, U+200B,
    /// U+FEFF) or a line/paragraph separator (U+2028, U+2029).
    #[error("name must not contain invisible or line-breaking characters")]
    Invisible,
}

/// Trims `raw` and checks it against the name rule, returning the trimmed name.
///
/// Length is counted in characters, not bytes, so 64 accented letters pass.
///
/// # Errors
/// [`NameError`] naming the first rule broken; emptiness and length are checked before the
/// characters.
pub(crate) fn validate_display_name(raw: &str) -> Result<String, NameError> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(NameError::TooLong);
    }
    for c in name.chars() {
        match c.general_category() {
            GeneralCategory::Control => return Err(NameError::Control),
            GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator => return Err(NameError::Invisible),
            _ => {}
        }
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_kept_otherwise() {
        assert_eq!(validate_display_name("  Ada  ").as_deref(), Ok("Ada"));
        assert_eq!(
            validate_display_name("\tLin Yu\u{3000}").as_deref(),
            Ok("Lin Yu")
        );
        assert_eq!(validate_display_name("Zoë 🚀").as_deref(), Ok("Zoë 🚀"));
        assert_eq!(validate_display_name("a b").as_deref(), Ok("a b"));
    }

    #[test]
    fn empty_and_whitespace_only_names_are_refused() {
        for raw in ["", " ", "\t\n", "\u{3000}\u{a0}", "\u{2003}"] {
            assert_eq!(validate_display_name(raw), Err(NameError::Empty), "{raw:?}");
        }
    }

    #[test]
    fn length_is_counted_in_characters_after_trimming() {
        assert!(validate_display_name(&"é".repeat(64)).is_ok());
        assert_eq!(
            validate_display_name(&"é".repeat(65)),
            Err(NameError::TooLong)
        );
        assert!(validate_display_name(&format!("  {}  ", "x".repeat(64))).is_ok());
    }

    #[test]
    fn control_characters_are_refused() {
        for raw in [
            "a\u{7}b",
            "line\nbreak",
            "esc\u{1b}[31m",
            "del\u{7f}",
            "c1\u{85}x",
        ] {
            assert_eq!(
                validate_display_name(raw),
                Err(NameError::Control),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn format_characters_and_separators_are_refused() {
        for raw in [
            "evil\u{202e}gnp.exe", // right-to-left override
            "zero\u{200b}width",   // zero-width space
            "\u{feff}bom",         // byte order mark / ZWNBSP
            "soft\u{ad}hyphen",
            "join\u{200d}er",
            "iso\u{2066}late",
            "tag\u{e0041}s",      // tag characters (Cf, outside the BMP)
            "emoji 👩\u{200d}💻", // ZWJ sequences are Cf too: refused by the rule as written
            "line\u{2028}sep",
            "para\u{2029}sep",
        ] {
            assert_eq!(
                validate_display_name(raw),
                Err(NameError::Invisible),
                "{raw:?}"
            );
        }
    }
}
