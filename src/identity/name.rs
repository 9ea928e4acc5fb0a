//! The rule for text shown to other people: a session's display name (in `new_user`, `ready`
//! and `/clients`) and, held to the same characters, the user id a join token names.
//!
//! Names are shown to other people, so beyond length and control characters we refuse what
//! makes a name lie about itself: Unicode format characters (general category Cf: bidi overrides
//! such as U+202E that reverse the text after them, zero-width spaces and joiners, the BOM) and
//! the line and paragraph separators U+2028/U+2029, which break lines like `\n` but are not
//! control characters. Surrounding whitespace is trimmed, so a name of only spaces is empty.
//!
//! The 64-character limit is part of the API contract (openapi.yaml), not a flag.

use serde::{Deserialize, Serialize};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// Why a name (or a user id) was refused. `Display` is the message sent to the client with the
/// `invalid_name` (or `invalid_user`) error code, after the name of the field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty, or nothing but whitespace.
    #[error("must not be empty or only whitespace")]
    Empty,
    /// Longer than allowed after trimming (64 characters for a name).
    #[error("must be at most {0} characters")]
    TooLong(usize),
    /// A control character (Cc), such as a newline or escape.
    #[error("must not contain control characters")]
    Control,
    /// An invisible or text-reordering character: a format character (Cf, e.g. U+202E, U+200B,
    /// U+FEFF) or a line/paragraph separator (U+2028, U+2029).
    #[error("must not contain invisible or line-breaking characters")]
    Invisible,
}

/// A display name: 1 to 64 characters after trimming, none of them a control character, a
/// format character (Cf) or a line or paragraph separator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct DisplayName(String);

impl TryFrom<String> for DisplayName {
    type Error = NameError;

    fn try_from(name: String) -> Result<Self, Self::Error> {
        DisplayName::parse(&name)
    }
}

impl DisplayName {
    /// Longest name accepted, in characters (Unicode scalar values, not bytes), after trimming.
    pub const MAX_CHARS: usize = 64;

    /// Trims `raw` (whitespace other than control characters) and checks it against the name
    /// rule; the name kept is the trimmed one.
    ///
    /// # Errors
    /// [`NameError`] naming the first rule broken; emptiness and length are checked before the
    /// characters.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        // Control characters are refused even at the ends (a trailing `\n` or U+0085 is not
        // quietly dropped), so only the other whitespace is trimmed.
        let name = raw.trim_matches(|c: char| c.is_whitespace() && !c.is_control());
        check_shown(name, Self::MAX_CHARS)?;
        Ok(DisplayName(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Longest user id (a join token's `sub`) accepted, in characters.
pub const MAX_USER_CHARS: usize = 256;

/// Checks a join token's `sub`, which others see as `user`, against the characters of the name
/// rule. Not trimmed: a user id is matched exactly (`/api/publish`, `?user=`), so surrounding
/// whitespace is refused rather than silently changed.
///
/// # Errors
/// [`NameError`] as for names, with [`MAX_USER_CHARS`] as the limit; surrounding whitespace
/// counts as [`NameError::Invisible`].
pub fn check_user(sub: &str) -> Result<(), NameError> {
    check_shown(sub, MAX_USER_CHARS)?;
    if sub.trim() != sub {
        return Err(NameError::Invisible);
    }
    Ok(())
}

/// The part of the rule both share: not blank, at most `max` characters, nothing invisible.
fn check_shown(text: &str, max: usize) -> Result<(), NameError> {
    if text.trim().is_empty() {
        return Err(NameError::Empty);
    }
    if text.chars().count() > max {
        return Err(NameError::TooLong(max));
    }
    for c in text.chars() {
        match c.general_category() {
            GeneralCategory::Control => return Err(NameError::Control),
            GeneralCategory::Format
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator => return Err(NameError::Invisible),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &str) -> Result<String, NameError> {
        DisplayName::parse(raw).map(|name| name.as_str().to_owned())
    }

    #[test]
    fn names_are_trimmed_and_kept_otherwise() {
        assert_eq!(parsed("  Ada  ").as_deref(), Ok("Ada"));
        assert_eq!(parsed(" bob ").as_deref(), Ok("bob"));
        assert_eq!(parsed("\u{a0}Lin Yu\u{3000}").as_deref(), Ok("Lin Yu"));
        assert_eq!(parsed("Zoë 🚀").as_deref(), Ok("Zoë 🚀"));
        assert_eq!(parsed("a b").as_deref(), Ok("a b"));
    }

    #[test]
    fn empty_and_whitespace_only_names_are_refused() {
        for raw in ["", " ", "   ", "\t\n", "\u{3000}\u{a0}", "\u{2003}"] {
            assert_eq!(parsed(raw), Err(NameError::Empty), "{raw:?}");
        }
    }

    #[test]
    fn length_is_counted_in_characters_after_trimming() {
        assert!(parsed(&"é".repeat(64)).is_ok());
        assert_eq!(parsed(&"é".repeat(65)), Err(NameError::TooLong(64)));
        assert!(parsed(&format!("  {}  ", "x".repeat(64))).is_ok());
    }

    #[test]
    fn control_characters_are_refused() {
        for raw in [
            "a\u{7}b",
            "line\nbreak",
            "esc\u{1b}[31m",
            "del\u{7f}",
            "c1\u{85}x",
            "c1\u{85}", // whitespace to `trim`, but a control character first
            "\tindent", // likewise: control characters are not trimmed away
            "bob\n",
        ] {
            assert_eq!(parsed(raw), Err(NameError::Control), "{raw:?}");
        }
    }

    #[test]
    fn format_characters_and_separators_are_refused() {
        for raw in [
            "a\u{202e}b",          // right-to-left override
            "evil\u{202e}gnp.exe", // right-to-left override
            "\u{200b}",            // a zero-width space alone
            "zero\u{200b}width",   // zero-width space
            "\u{feff}bom",         // byte order mark / ZWNBSP
            "soft\u{ad}hyphen",
            "join\u{200d}er",
            "iso\u{2066}late",
            "tag\u{e0041}s",      // tag characters (Cf, outside the BMP)
            "emoji 👩\u{200d}💻", // ZWJ sequences are Cf too: refused by the rule as written
            "ab\u{2028}cd",
            "para\u{2029}sep",
        ] {
            assert_eq!(parsed(raw), Err(NameError::Invisible), "{raw:?}");
        }
    }

    #[test]
    fn a_stored_name_is_held_to_the_rule_when_read_back() {
        let name: DisplayName = serde_json::from_str("\" ann \"").unwrap();
        assert_eq!(name.as_str(), "ann");
        assert!(serde_json::from_str::<DisplayName>("\"a\\u202eb\"").is_err());
    }

    #[test]
    fn user_ids_follow_the_characters_of_the_name_rule_untrimmed() {
        assert_eq!(check_user("auth0|5f1c"), Ok(()));
        assert_eq!(check_user("ann@example.com"), Ok(()));
        assert_eq!(check_user("a\nb"), Err(NameError::Control));
        assert_eq!(check_user("\u{1b}[2J"), Err(NameError::Control));
        assert_eq!(check_user("ann\u{202e}"), Err(NameError::Invisible));
        assert_eq!(check_user(" ann"), Err(NameError::Invisible));
        assert_eq!(check_user("  "), Err(NameError::Empty));
        assert_eq!(
            check_user(&"u".repeat(MAX_USER_CHARS + 1)),
            Err(NameError::TooLong(MAX_USER_CHARS))
        );
    }
}
