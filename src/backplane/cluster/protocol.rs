//! Protocol versions on the wire: which protocol wrote a message (`"v"`), and reading what a
//! newer instance sends ([`read`]): what this build knows of a message is applied, the rest
//! reported to be logged once and counted (see the [module doc](super) on mixed versions).

use serde::Deserialize;
use serde_json::Value;

use super::wire::Message;

/// This build's protocol: 2 added room channels, `prepare`, `"rooms"` in `handover` and the
/// `"v"` field itself; 3 numbers a room's messages on the room's own counter, and a server
/// message to everyone also on the everyone line (`"all"`, see [`sequence`](super::sequence))
/// (see the [module doc](super) on mixed versions).
pub(super) const PROTOCOL: u32 = 3;

/// The first protocol that reads room traffic on room channels: a cluster with an instance
/// older than that alive is mixed.
pub(super) const ROOM_CHANNELS: u32 = 2;

/// What an instance with rooms sharded (`--redis-shard-rooms` on a Redis Cluster) writes as its
/// protocol key: protocol 3 on the wire, with each room in a slot of its own and `points` in
/// `handover` (see [`transit`](super::transit)). Its room keys are not where instances without
/// it keep theirs, so the two never serve one deployment together: each instance tells an
/// instance that disagrees from its key, and says so in `/healthz`.
pub(super) const SHARDED_ROOMS: u32 = 4;

/// The first protocol whose `"seq"` on a room's channel is the room's own number (before, the
/// bus's, which this build does not compare with the room's).
pub(super) const ROOM_NUMBERS: u32 = 3;

/// Why a message read was not (wholly) understood.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Unknown {
    /// A kind this build does not know (from a newer protocol): ignored.
    Kind(String),
    /// Fields this build does not know, in a message it applies without them.
    Fields(Vec<String>),
    /// Not a message at all.
    Malformed(String),
}

impl Unknown {
    /// The metric's label.
    pub(super) fn reason(&self) -> &'static str {
        match self {
            Unknown::Kind(_) => "unknown_kind",
            Unknown::Fields(_) => "unknown_field",
            Unknown::Malformed(_) => "malformed",
        }
    }
}

/// Reads a message: what this build can apply, and what it did not understand. Fields are
/// looked for only in messages of a newer protocol, so the common path parses once.
pub(super) fn read(payload: &[u8]) -> (Option<Message>, Option<Unknown>) {
    match serde_json::from_slice(payload) {
        Ok(message) => {
            let fields = if version_of(payload) > PROTOCOL {
                unknown_fields(payload, &message)
            } else {
                Vec::new()
            };
            (
                Some(message),
                (!fields.is_empty()).then_some(Unknown::Fields(fields)),
            )
        }
        Err(err) => (None, Some(unknown_or_malformed(payload, err))),
    }
}

/// The fields of `payload` that `message`, as this build read it, does not have: what a newer
/// protocol added. (Messages carry raw JSON from clients, which a deserializer that reports
/// what it skips cannot pass through, so the two are compared.)
fn unknown_fields(payload: &[u8], message: &Message) -> Vec<String> {
    let (Ok(sent), Ok(known)) = (
        serde_json::from_slice::<Value>(payload),
        serde_json::to_value(message),
    ) else {
        return Vec::new();
    };
    let mut fields = Vec::new();
    missing(&sent, &known, "", &mut fields);
    // `seq`, `all` and `v` are read before the message, by `seq_of`, `all_of` and `version_of`.
    fields.retain(|field| !["seq", "all", "v"].contains(&field.as_str()));
    fields
}

/// Adds to `out` the paths of `sent`'s object keys that `known` lacks, below `at`.
fn missing(sent: &Value, known: &Value, at: &str, out: &mut Vec<String>) {
    let (Value::Object(sent), Value::Object(known)) = (sent, known) else {
        return;
    };
    for (key, value) in sent {
        let path = if at.is_empty() {
            key.clone()
        } else {
            format!("{at}.{key}")
        };
        match known.get(key) {
            Some(known) => missing(value, known, &path, out),
            None => out.push(path),
        }
    }
}

/// A message that did not parse: one of a kind this build does not know, or junk.
fn unknown_or_malformed(payload: &[u8], err: serde_json::Error) -> Unknown {
    #[derive(Deserialize)]
    struct Kind {
        #[serde(rename = "type")]
        kind: String,
    }
    match serde_json::from_slice::<Kind>(payload) {
        Ok(Kind { kind }) if !KINDS.contains(&kind.as_str()) => Unknown::Kind(kind),
        _ => Unknown::Malformed(err.to_string()),
    }
}

/// Every kind this build knows, as tagged on the wire.
const KINDS: [&str; 17] = [
    "join",
    "leave",
    "enter",
    "exit",
    "broadcast",
    "announce",
    "direct",
    "reply",
    "handover",
    "prepare",
    "handed_over",
    "not_yet",
    "not_coming",
    "handoff",
    "adopted",
    "probe",
    "refresh",
];

/// The protocol that wrote a message (`"v"`, first or right after `"seq"`); 1 without one.
pub(super) fn version_of(payload: &[u8]) -> u32 {
    let rest = payload.strip_prefix(b"{").unwrap_or(payload);
    let rest = match rest.strip_prefix(br#""seq":"#) {
        Some(numbered) => {
            let end = numbered.iter().position(|b| *b == b',').unwrap_or(0);
            &numbered[end + 1..]
        }
        None => rest,
    };
    let Some(v) = rest.strip_prefix(br#""v":"#) else {
        return 1;
    };
    let end = v
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(v.len());
    std::str::from_utf8(&v[..end])
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::backplane::cluster::wire::seq_of;

    #[test]
    fn what_a_newer_protocol_adds_is_applied_without_it_or_ignored() {
        assert_eq!(version_of(br#"{"v":3,"type":"x"}"#), 3);
        assert_eq!(version_of(br#"{"seq":12,"v":2,"type":"x"}"#), 2);
        assert_eq!(
            version_of(br#"{"type":"probe","body":{}}"#),
            1,
            "protocol 1 wrote no v"
        );

        let known = r#"{"v":4,"type":"announce","body":{"message":1,"priority":"high"}}"#;
        let (message, unknown) = read(known.as_bytes());
        assert!(matches!(
            message,
            Some(Message::Announce { room: None, .. })
        ));
        let Some(Unknown::Fields(fields)) = unknown else {
            panic!("the new field is reported: {unknown:?}");
        };
        assert!(fields.iter().all(|f| f.contains("priority")), "{fields:?}");

        let (message, unknown) = read(br#"{"v":3,"type":"teleport","body":{}}"#);
        assert!(message.is_none());
        assert_eq!(unknown, Some(Unknown::Kind("teleport".into())));
        let (message, unknown) = read(b"not json");
        assert!(message.is_none());
        assert!(matches!(unknown, Some(Unknown::Malformed(_))));

        // This protocol's own messages read back whole, a numbered one too.
        let own = Message::Probe {
            req: 1,
            origin: Uuid::nil(),
        }
        .to_json();
        assert!(matches!(
            read(own.as_bytes()),
            (Some(Message::Probe { .. }), None)
        ));
        let numbered = format!(r#"{{"seq":4,{}"#, &own[1..]);
        assert_eq!(seq_of(numbered.as_bytes()), Some(4));
        assert!(matches!(read(numbered.as_bytes()), (Some(_), None)));
    }
}
