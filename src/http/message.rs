//! A client's `message` (direct, broadcast, or from the server API): any JSON value, kept as
//! sent, but not nested beyond what a recipient's parser can be trusted with.

use serde::Deserialize;
use serde_json::value::RawValue;

/// Deepest nesting of arrays and objects a `message` may have. serde_json's own recursion
/// limit does not apply to a message kept raw, and recipients' parsers may have none; 64
/// levels is far beyond any real message.
pub(crate) const MAX_MESSAGE_DEPTH: usize = 64;

/// A client's `message`, kept as sent (any JSON value), refused beyond [`MAX_MESSAGE_DEPTH`].
pub(crate) struct Message(Box<RawValue>);

impl Message {
    /// The JSON text as sent.
    pub(crate) fn get(&self) -> &str {
        self.0.get()
    }

    pub(crate) fn into_inner(self) -> Box<RawValue> {
        self.0
    }
}

impl<'de> Deserialize<'de> for Message {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        if nesting_depth(raw.get()) > MAX_MESSAGE_DEPTH {
            return Err(serde::de::Error::custom(format_args!(
                "message nested deeper than {MAX_MESSAGE_DEPTH} levels"
            )));
        }
        Ok(Message(raw))
    }
}

/// How deeply arrays and objects nest in a valid JSON text (brackets inside strings skipped).
fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for byte in json.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}
