//! Who someone is, on the ground floor: a session's id, the token that proves it (and the hash
//! kept instead of it), and the name it is shown by. Imported by the limits, the registry, the
//! hub and the edge alike; imports nothing of the crate, so every floor above can use it.
//!
//! # Layout
//! - `id`: [`SessionId`], the public UUID of a session.
//! - `token`: [`Token`] (`<id>.<secret>`, handed out once) and [`TokenHash`] (what is stored).
//! - `name`: [`DisplayName`] and the rule for text shown to other people, which a join token's
//!   `sub` ([`check_user`]) is held to as well; [`NameError`] says which part was broken.
//! - `room`: [`RoomName`] and its rule, and the [`RoomPatterns`] that say which rooms a
//!   session may be in (the JWT `rooms` claim, `--allow-rooms`).
//!
//! Nothing here knows HTTP: the edge hands in strings and picks the status codes.

mod id;
mod name;
mod room;
mod token;

pub use id::SessionId;
pub use name::{DisplayName, NameError, check_user};
pub use room::{RoomError, RoomName, RoomPattern, RoomPatterns};
pub use token::{Token, TokenHash};
