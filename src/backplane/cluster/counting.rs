//! The Lua scripts that count events in Redis (see [`sequence`](super::sequence) for what is
//! counted and why): each numbers or counts in the same step as it publishes, so a count never
//! disagrees with what was published.
//!
//! A session's counts (its [`COUNTS`](super::keys::COUNTS) hash) hold `direct`, `own`, `done`
//! and one starting point per line it is on: `base` (the bus's counter, while in `lobby`),
//! `r:<room>` (that room's counter, while in it) and `all` (the everyone counter, while not in
//! `lobby`). [`total`](TOTAL) reads them.

use redis::Script;

use super::keys::Keys;
use super::wire::{Message, with_sizes};
use crate::identity::{RoomName, SessionId};

/// Lua: `total(counts, bus, everyone, rooms)`: how many events the session whose counts hash
/// is `counts` was given, at this point; `nil` without counts. `bus` and `everyone` are the
/// counters' keys, `rooms` the prefix of the room counters'.
pub(super) const TOTAL: &str = r"
local function now(key) return tonumber(redis.call('GET', key) or '0') end
local function total(counts, bus, everyone, rooms)
    local c = redis.call('HGETALL', counts)
    if #c == 0 then return nil end
    local sum = 0
    for i = 1, #c, 2 do
        local field, value = c[i], tonumber(c[i + 1])
        if field == 'direct' or field == 'done' then sum = sum + value
        elseif field == 'own' then sum = sum - value
        elseif field == 'base' then sum = sum + now(bus) - value
        elseif field == 'all' then sum = sum + now(everyone) - value
        elseif string.sub(field, 1, 2) == 'r:' then
            sum = sum + now(rooms .. string.sub(field, 3)) - value
        end
    end
    return sum
end
";

/// Lua: `numbered(payload, n, extra)`: `payload` (a message, `{"v":..,` first) with
/// `"seq": n` first and `extra` (`"all":m,` or empty) after its protocol.
const NUMBER: &str = r#"
local function numbered(payload, n, extra)
    local head, rest = string.match(payload, '^{("v":%d+,)(.*)$')
    if not head then head, rest = '', string.sub(payload, 2) end
    return '{"seq":' .. n .. ',' .. head .. extra .. rest
end
"#;

/// Numbers a message on its channel's counter KEYS[1] and the ARGV[3] counters after it (the
/// lines it reaches beyond its channel's), and publishes it on ARGV[1] with `"seq"` (and, with
/// ARGV[4] = 1, `"all"`: the number KEYS[2], the everyone counter, gave it), counting it as
/// the sender's own in KEYS[ARGV[3] + 2] if given. ARGV[2]: the message. Returns the number.
const NUMBERED: &str = r#"
    local k = tonumber(ARGV[3])
    local n = redis.call('INCR', KEYS[1])
    local extra = ''
    for i = 2, k + 1 do
        local m = redis.call('INCR', KEYS[i])
        if i == 2 and ARGV[4] == '1' then extra = '"all":' .. m .. ',' end
    end
    local sender = KEYS[k + 2]
    if sender and redis.call('EXISTS', sender) == 1 then
        redis.call('HINCRBY', sender, 'own', 1)
    end
    redis.call(PUBLISH, ARGV[1], numbered(ARGV[2], n, extra))
    return n
    "#;

/// Publishes a session's `enter` or `exit` (ARGV[5]) of a room on ARGV[1], numbered (ARGV[4]
/// = 1) as [`NUMBERED`] does when the room's other members hear of it, and moves the session's
/// counts KEYS[k + 2] (k = ARGV[3]) at that very point: entering, its starting point ARGV[6]
/// on the room's counter KEYS[k + 3] (after this message, which it does not hear as the
/// others do); leaving, what the room gave it into `done`. Its own `joined` or `left` is a
/// direct event. The room is `lobby` when ARGV[7] = 1: then the everyone counter KEYS[k + 4]
/// counts for the session while it is out of it. ARGV[2]: the message.
const MOVE: &str = r#"
    local k = tonumber(ARGV[3])
    local counts, room, everyone = KEYS[k + 2], KEYS[k + 3], KEYS[k + 4]
    local field, lobby = ARGV[6], ARGV[7] == '1'
    local alive = redis.call('EXISTS', counts) == 1
    if alive and ARGV[5] == 'exit' then
        local start = redis.call('HGET', counts, field)
        if start then
            redis.call('HINCRBY', counts, 'done', now(room) - tonumber(start))
            redis.call('HDEL', counts, field)
        end
        if lobby then redis.call('HSET', counts, 'all', now(everyone)) end
    end
    local payload = ARGV[2]
    if ARGV[4] == '1' then
        local n = redis.call('INCR', KEYS[1])
        for i = 2, k + 1 do redis.call('INCR', KEYS[i]) end
        payload = numbered(payload, n, '')
    end
    if alive and ARGV[5] == 'enter' and redis.call('HEXISTS', counts, field) == 0 then
        redis.call('HSET', counts, field, now(room))
        local all = redis.call('HGET', counts, 'all')
        if lobby and all then
            redis.call('HINCRBY', counts, 'done', now(everyone) - tonumber(all))
            redis.call('HDEL', counts, 'all')
        end
    end
    if alive then redis.call('HINCRBY', counts, 'direct', 1) end
    redis.call(PUBLISH, ARGV[1], payload)
    "#;

/// With rooms sharded (see [`sequence`](super::sequence)): numbers a message of one room on
/// the room's counter KEYS[1] and publishes it on ARGV[1] with `"seq"`, counting it as the
/// sender ARGV[3]'s own (when given and still a member) by moving its starting point in the
/// room's hash KEYS[2] past it. ARGV[2]: the message. Returns the number and the room's
/// members (the hash's field `#`), so that a broadcast reads nothing in another slot.
const NUMBERED_ROOM: &str = r"
    local n = redis.call('INCR', KEYS[1])
    local sender = ARGV[3]
    if sender ~= '' and redis.call('HEXISTS', KEYS[2], sender) == 1 then
        redis.call('HINCRBY', KEYS[2], sender, 1)
    end
    redis.call(PUBLISH, ARGV[1], numbered(ARGV[2], n, ''))
    return {n, tonumber(redis.call('HGET', KEYS[2], '#') or '0')}
    ";

/// With rooms sharded: writes session ARGV[1]'s starting point ARGV[2] in the room's hash
/// KEYS[1] unless it has one, counting it as a member (the field `#`: each starting point
/// written adds one, each removed takes one).
pub(super) const START_ROOM: &str = r"
    if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
        redis.call('HINCRBY', KEYS[1], '#', 1)
    end
    ";

/// With rooms sharded: removes session ARGV[1], gone from the hub, from the room's hash
/// KEYS[1] (its point, counted out, and what the room gave it).
pub(super) const FORGET_ROOM: &str = r"
    if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
        redis.call('HINCRBY', KEYS[1], '#', -1)
    end
    redis.call('HDEL', KEYS[1], ARGV[1] .. ':done')
    ";

/// With rooms sharded: [`MOVE`] in the room's own slot. Publishes session ARGV[5]'s `enter` or
/// `exit` (ARGV[4]) of a room on ARGV[1], numbered on the room's counter KEYS[1] when ARGV[3]
/// = 1, and moves the session's starting point in the room's hash KEYS[2] at that very point:
/// entering, it starts after this message; leaving, what the room gave it is kept as
/// `<id>:done` and the point dropped. (Its own `joined` or `left` was counted in its counts
/// before: [`COUNT_MOVE`].) ARGV[2]: the message.
const MOVE_ROOM: &str = r#"
    local counter, starts, id = KEYS[1], KEYS[2], ARGV[5]
    if ARGV[4] == 'exit' then
        local start = redis.call('HGET', starts, id)
        if start then
            redis.call('HINCRBY', starts, id .. ':done', now(counter) - tonumber(start))
            redis.call('HDEL', starts, id)
            redis.call('HINCRBY', starts, '#', -1)
        end
    end
    local payload = ARGV[2]
    if ARGV[3] == '1' then payload = numbered(payload, redis.call('INCR', counter), '') end
    if ARGV[4] == 'enter' and redis.call('HEXISTS', starts, id) == 0 then
        redis.call('HSET', starts, id, now(counter))
        redis.call('HINCRBY', starts, '#', 1)
    end
    redis.call(PUBLISH, ARGV[1], payload)
    "#;

/// With rooms sharded, before [`MOVE_ROOM`]: counts the session's own `joined` or `left` as a
/// direct event in its counts KEYS[1] (first: an error overcounts, never under) and, leaving,
/// notes the room (field ARGV[1], `x:<room>`) whose hash keeps what the room gave it.
const COUNT_MOVE: &str = r"
    if redis.call('EXISTS', KEYS[1]) == 1 then
        redis.call('HINCRBY', KEYS[1], 'direct', 1)
        if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], ARGV[1], 1) end
    end
    ";

/// With rooms sharded: where the room's counter KEYS[1] stands, then what the room gave each
/// session ARGV[i] by then (what it kept as done, plus since its starting point in KEYS[2]).
const ROOM_PARTS: &str = r"
    local at = now(KEYS[1])
    local parts = {at}
    for i = 1, #ARGV do
        local given = tonumber(redis.call('HGET', KEYS[2], ARGV[i] .. ':done') or '0')
        local start = redis.call('HGET', KEYS[2], ARGV[i])
        if start then given = given + at - tonumber(start) end
        parts[i + 1] = given
    end
    return parts
    ";

/// Publishes a direct message to its recipient's home, counting it when somebody read it.
/// KEYS: the recipient's counts; ARGV: the home's channel, the message. Returns the readers.
const COUNTED: &str = r"
    local readers = redis.call(PUBLISH, ARGV[1], ARGV[2])
    if readers > 0 and redis.call('EXISTS', KEYS[1]) == 1 then
        redis.call('HINCRBY', KEYS[1], 'direct', 1)
    end
    return readers
    ";

/// Adds ARGV[i] to the `direct` count of the session whose counts are KEYS[i], for those that
/// still have counts.
pub(super) const DIRECT: &str = r"
    for i = 1, #KEYS do
        if redis.call('EXISTS', KEYS[i]) == 1 then
            redis.call('HINCRBY', KEYS[i], 'direct', ARGV[i])
        end
    end
    ";

/// Starts a session's counts KEYS[1] with the field/value pairs ARGV unless it has some: Redis
/// lost them when it restarted empty. Returns whether it did.
pub(super) const RESTART: &str = r"
    if redis.call('EXISTS', KEYS[1]) == 0 then
        redis.call('HSET', KEYS[1], unpack(ARGV))
        return 1
    end
    return 0
    ";

/// Rehomes the sessions ARGV[6..] still homed on the dead ARGV[1] to ARGV[2], and publishes
/// `adopted` with each one's entry and total on the bus ARGV[4] (with rooms sharded, the total
/// of its counts alone, and the rooms it left: see [`recovery`](super::recovery)). KEYS: the directory, the
/// bus's counter, the everyone counter, the dead instance's liveness key, the set of its
/// sessions adopted (kept a day); ARGV[3]: the prefix of the counts keys, ARGV[5]: of the room
/// counters. Returns how many it adopted: none once the liveness key is back (the instance was
/// only cut off; when it re-registers it gives up those in the set and keeps the others: see
/// `reregister` in [`recovery`](super::recovery)).
const ADOPT: &str = r#"
    if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
    local adopted = {}
    for i = 6, #ARGV do
        local id = ARGV[i]
        local json = redis.call('HGET', KEYS[1], id)
        if json then
            local entry = cjson.decode(json)
            if entry.home == ARGV[1] then
                entry.home = ARGV[2]
                redis.call('HSET', KEYS[1], id, cjson.encode(entry))
                redis.call('SADD', KEYS[5], id)
                local given = total(ARGV[3] .. id, KEYS[2], KEYS[3], ARGV[5]) or -1
                local left = {}
                for _, field in ipairs(redis.call('HKEYS', ARGV[3] .. id)) do
                    if string.sub(field, 1, 2) == 'x:' then
                        table.insert(left, cjson.encode(string.sub(field, 3)))
                    end
                end
                table.insert(adopted, string.format(
                    '{"id":"%s","total":%d,"entry":%s,"left":[%s]}', id, given, json,
                    table.concat(left, ',')))
            end
        end
    end
    if #adopted > 0 then
        redis.call('PEXPIRE', KEYS[5], 86400000)
        redis.call(PUBLISH, ARGV[4], '{"type":"adopted","body":{"home":"' .. ARGV[2]
            .. '","sessions":[' .. table.concat(adopted, ',') .. ']}}')
    end
    return #adopted
    "#;

/// How a message is published: plainly, numbered, or as a session's move into or out of a
/// room (numbered or not). `counters`: its channel's counter first, then the other lines it is
/// numbered on.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Counting {
    Plain,
    Numbered {
        counters: Vec<String>,
        /// Whether the second counter is the everyone line's, whose number it carries.
        all: bool,
        own: Option<SessionId>,
    },
    Move {
        counters: Vec<String>,
        numbered: bool,
        peer: SessionId,
        room: RoomName,
        enter: bool,
    },
}

impl Counting {
    /// How `message`, published on `channel` (a room's channel, or the bus: `None`), is
    /// counted. `listed(size)`: whether a room of `size` members hears of joins and leaves.
    pub(super) fn of(
        keys: &Keys,
        message: &Message,
        channel: Option<&RoomName>,
        listed: &dyn Fn(usize) -> bool,
    ) -> Counting {
        let channel = channel.map_or_else(|| keys.seq(), |room| keys.room_seq(room));
        let lines = |rooms: &[&RoomName]| {
            let mut counters = vec![channel.clone()];
            for room in rooms {
                let counter = keys.room_seq(room);
                if !counters.contains(&counter) {
                    counters.push(counter);
                }
            }
            counters
        };
        let numbered = |rooms: &[&RoomName], own| Counting::Numbered {
            counters: lines(rooms),
            all: false,
            own,
        };
        // A join or leave is numbered in the rooms whose other members hear of it.
        let heard = |rooms: &[RoomName], sizes: &[usize], gone: usize| {
            let heard: Vec<RoomName> = with_sizes(rooms, sizes)
                .into_iter()
                .filter(|(_, size)| listed(size + gone))
                .map(|(room, _)| room)
                .collect();
            heard
        };
        match message {
            Message::Broadcast { from, room, .. } => numbered(&[room], Some(from.id)),
            Message::Announce {
                room: Some(room), ..
            } => numbered(&[room], None),
            Message::Announce { room: None, .. } => Counting::Numbered {
                counters: vec![channel.clone(), keys.everyone()],
                all: true,
                own: None,
            },
            Message::Join { peer, rooms, sizes } => match heard(rooms, sizes, 0) {
                heard if heard.is_empty() => Counting::Plain,
                heard => numbered(&heard.iter().collect::<Vec<_>>(), Some(peer.id)),
            },
            Message::Leave { rooms, sizes, .. } => match heard(rooms, sizes, 1) {
                heard if heard.is_empty() => Counting::Plain,
                heard => numbered(&heard.iter().collect::<Vec<_>>(), None),
            },
            Message::Enter {
                peer,
                room,
                members,
                ..
            } => Counting::Move {
                counters: lines(&[room]),
                numbered: listed(*members),
                peer: peer.id,
                room: room.clone(),
                enter: true,
            },
            Message::Exit {
                peer,
                room,
                members,
            } => Counting::Move {
                counters: lines(&[room]),
                numbered: listed(members + 1),
                peer: peer.id,
                room: room.clone(),
                enter: false,
            },
            _ => Counting::Plain,
        }
    }
}

/// The field of a session's counts holding its starting point in `room`.
pub(super) fn start_field(room: &RoomName) -> String {
    if room.is_lobby() {
        "base".to_owned()
    } else {
        format!("r:{room}")
    }
}

/// The scripts that publish, calling `publish` (`PUBLISH` or `SPUBLISH`, see
/// [`Conn::publish_command`](super::transport::Conn::publish_command)).
pub(super) struct Scripts {
    pub(super) numbered: Script,
    pub(super) moved: Script,
    pub(super) counted: Script,
    pub(super) adopt: Script,
    pub(super) numbered_room: Script,
    pub(super) moved_room: Script,
    pub(super) count_move: Script,
    pub(super) room_parts: Script,
}

impl Scripts {
    pub(super) fn new(publish: &str) -> Self {
        let script = |body: &str| {
            Script::new(&format!(
                "local PUBLISH = '{publish}'\n{TOTAL}\n{NUMBER}\n{body}"
            ))
        };
        Scripts {
            numbered: script(NUMBERED),
            moved: script(MOVE),
            counted: script(COUNTED),
            adopt: script(ADOPT),
            numbered_room: script(NUMBERED_ROOM),
            moved_room: script(MOVE_ROOM),
            count_move: script(COUNT_MOVE),
            room_parts: script(ROOM_PARTS),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;
    use crate::identity::DisplayName;
    use crate::registry::Peer;

    fn ann() -> Peer {
        Peer {
            id: SessionId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap(),
            name: DisplayName::parse("ann").unwrap(),
            user: None,
        }
    }

    fn room(name: &str) -> RoomName {
        RoomName::parse(name).unwrap()
    }

    fn counters(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn each_message_is_numbered_on_the_lines_of_those_who_hear_it() {
        let keys = Keys::new("p");
        let up_to_two = |size: usize| size <= 2;
        let x = room("x");
        let of = |message: &Message, channel: Option<&RoomName>| {
            Counting::of(&keys, message, channel, &up_to_two)
        };
        let message = || RawValue::from_string("1".into()).unwrap();
        let broadcast = Message::Broadcast {
            from: ann(),
            room: x.clone(),
            message: message(),
        };
        assert_eq!(
            of(&broadcast, Some(&x)),
            Counting::Numbered {
                counters: counters(&["p:seq:x"]),
                all: false,
                own: Some(ann().id)
            }
        );
        let everyone = Message::Announce {
            room: None,
            message: message(),
        };
        assert_eq!(
            of(&everyone, None),
            Counting::Numbered {
                counters: counters(&["p:seq", "p:everyone"]),
                all: true,
                own: None
            }
        );
        // Mixed: one join on the bus for lobby and x, numbered on both lines; y is counted.
        let join = |sizes: Vec<usize>| Message::Join {
            peer: ann(),
            rooms: vec![RoomName::lobby(), x.clone(), room("y")],
            sizes,
        };
        assert_eq!(
            of(&join(vec![2, 1, 3]), None),
            Counting::Numbered {
                counters: counters(&["p:seq", "p:seq:x"]),
                all: false,
                own: Some(ann().id)
            }
        );
        assert_eq!(of(&join(vec![3, 3, 3]), None), Counting::Plain);
        // A leave is heard where the room had one more member; its own `left` always counts.
        let exit = |members| Message::Exit {
            peer: ann(),
            room: x.clone(),
            members,
        };
        let moved = |numbered| Counting::Move {
            counters: counters(&["p:seq:x"]),
            numbered,
            peer: ann().id,
            room: x.clone(),
            enter: false,
        };
        assert_eq!(of(&exit(1), Some(&x)), moved(true));
        assert_eq!(of(&exit(2), Some(&x)), moved(false));
        let direct = Message::Probe {
            req: 1,
            origin: uuid::Uuid::nil(),
        };
        assert_eq!(of(&direct, None), Counting::Plain);
        assert_eq!(start_field(&RoomName::lobby()), "base");
        assert_eq!(start_field(&x), "r:x");
    }
}
