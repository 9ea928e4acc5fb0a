//! The room flags, one group of [`Config`](super::Config): presence above which size, which
//! rooms sessions may be in, whom a direct message may reach, and how many rooms there may be.

use clap::{Args, ValueEnum};

use super::parse::parse_room_pattern;
use crate::backplane::HubSettings;
use crate::identity::{RoomPattern, RoomPatterns};

/// The room flags; see [`Config`](super::Config) for how they are read.
#[derive(Clone, Debug, Args, PartialEq)]
pub struct RoomFlags {
    /// Rooms with more members than this are not told of each join and leave (which costs
    /// the square of a room's size): their members get `room_count` at most once a second,
    /// and `ready` and `joined` carry the count instead of the roster. 0 = no limit.
    #[arg(long, env = "SWITCHBOARD_ROOM_PRESENCE_LIMIT", default_value_t = 1000)]
    pub room_presence_limit: usize,

    /// Rooms any session may be in (comma-separated names, or `prefix*` patterns; `*`: any).
    /// A join token's `rooms` claim narrows it for its session; refused rooms are 403
    /// `room_forbidden`.
    #[arg(
        long,
        env = "SWITCHBOARD_ALLOW_ROOMS",
        value_delimiter = ',',
        default_value = "*",
        value_parser = parse_room_pattern
    )]
    pub allow_rooms: Vec<RoomPattern>,

    /// Whom a session may send direct messages: `any` session, or only one it shares a room
    /// with (`shared-room`: 403 `no_shared_room` otherwise, for tenant isolation).
    #[arg(long, env = "SWITCHBOARD_DIRECT_MESSAGES", value_enum, default_value_t = DirectMessages::Any)]
    pub direct_messages: DirectMessages,

    /// Most rooms one session may be in at once; beyond it a join is 409 `session_room_limit`.
    #[arg(long, env = "SWITCHBOARD_MAX_ROOMS_PER_SESSION", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_rooms_per_session: u32,

    /// Most rooms with members at once (in a cluster, in all of it); beyond it a join that
    /// would open a new room is 503 `room_limit`.
    #[arg(long, env = "SWITCHBOARD_MAX_ROOMS", default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_rooms: u64,
}

impl Default for RoomFlags {
    fn default() -> Self {
        RoomFlags {
            room_presence_limit: 1000,
            allow_rooms: vec![RoomPattern::Prefix(String::new())],
            direct_messages: DirectMessages::Any,
            max_rooms_per_session: 100,
            max_rooms: 100_000,
        }
    }
}

impl RoomFlags {
    /// What the hub decides with these and `presence`.
    pub(crate) fn hub_settings(&self, presence: bool) -> HubSettings {
        HubSettings {
            presence,
            room_presence_limit: self.room_presence_limit,
            allow_rooms: RoomPatterns::from(self.allow_rooms.clone()),
            shared_room_only: self.direct_messages == DirectMessages::SharedRoom,
        }
    }
}

/// Whom a session may send direct messages (`--direct-messages`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum DirectMessages {
    /// Any session.
    #[default]
    Any,
    /// Only a session it shares a room with.
    SharedRoom,
}
