//! The mailbox's rules, one by one, and a long pseudo-random run that checks them all at once.

use serde_json::value::RawValue;

use super::*;
use crate::identity::{DisplayName, SessionId};
use crate::registry::Event;
use crate::registry::event::{Broadcast, Direct, ENVELOPE_OVERHEAD, Scope, ServerMessage};

fn ann() -> (SessionId, DisplayName) {
    let id = SessionId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap();
    (id, DisplayName::parse("ann").unwrap())
}

/// A message of `bytes` bytes (at least 2: a JSON string).
fn message(bytes: usize) -> Box<RawValue> {
    RawValue::from_string(format!("\"{}\"", "x".repeat(bytes - 2))).unwrap()
}

/// A direct message whose message is `bytes` long.
fn direct(bytes: usize) -> Arc<Envelope> {
    let (from, from_name) = ann();
    Envelope::new(Event::Direct(Direct {
        from,
        from_name,
        recipient: from,
        message: message(bytes),
    }))
}

/// A broadcast whose message is `bytes` long.
fn broadcast(bytes: usize) -> Arc<Envelope> {
    let (from, from_name) = ann();
    Envelope::new(Event::ClientBroadcast(Broadcast {
        room: crate::identity::RoomName::lobby(),
        from,
        from_name,
        message: message(bytes),
    }))
}

/// A server message to `to`, `bytes` long.
fn server(to: Scope, bytes: usize) -> Arc<Envelope> {
    Envelope::new(Event::ServerMessage(ServerMessage {
        room: None,
        to,
        message: message(bytes),
    }))
}

fn ids(replay: &Replay) -> Vec<EventId> {
    replay.events.iter().map(|(id, _)| *id).collect()
}

/// (missed, ids) of each replay from `after` until nothing is left, and marks it all read.
fn read_all(mailbox: &mut Mailbox, mut after: EventId) -> Vec<(u64, Vec<EventId>)> {
    let mut runs = Vec::new();
    loop {
        let replay = mailbox.replay_after(after, 100);
        if replay.missed == 0 && replay.events.is_empty() {
            return runs;
        }
        after = replay.through;
        runs.push((replay.missed, ids(&replay)));
    }
}

#[test]
fn ids_start_at_one_and_replay_in_order() {
    let mut mailbox = Mailbox::new(4, usize::MAX);
    for n in 0..3 {
        assert_eq!(mailbox.push(direct(2)).unwrap().0, n + 1);
    }
    let replay = mailbox.replay_after(1, 10);
    assert_eq!(ids(&replay), [2, 3]);
    assert_eq!(replay.missed, 0);
}

#[test]
fn direct_pushes_are_refused_only_when_unread_direct_messages_fill_it() {
    let mut mailbox = Mailbox::new(2, usize::MAX);
    mailbox.push(direct(2)).unwrap();
    mailbox.push(direct(2)).unwrap();
    assert_eq!(mailbox.push(direct(2)), Err(Full));
    mailbox.replay_after(0, 1);
    // One slot now holds a read event, which may be evicted without loss.
    assert_eq!(mailbox.push(direct(2)), Ok((3, 0)));
}

#[test]
fn server_messages_to_a_session_or_user_are_kept_like_direct_ones() {
    let mut mailbox = Mailbox::new(2, usize::MAX);
    mailbox.push(server(Scope::Session, 2)).unwrap();
    mailbox.push(server(Scope::User, 2)).unwrap();
    assert_eq!(mailbox.push(server(Scope::Session, 2)), Err(Full));
    // One to everyone is fanned out: never refused, dropped on arrival here.
    assert_eq!(mailbox.push(server(Scope::Everyone, 2)), Ok((3, 1)));
    assert_eq!(read_all(&mut mailbox, 0), [(0, vec![1, 2]), (1, vec![])]);
}

#[test]
fn a_direct_message_evicts_unread_broadcasts_rather_than_being_refused() {
    let mut mailbox = Mailbox::new(2, usize::MAX);
    mailbox.push(broadcast(2)).unwrap();
    mailbox.push(broadcast(2)).unwrap();
    assert_eq!(mailbox.push(direct(2)), Ok((3, 1)));
    assert_eq!(mailbox.push(direct(2)), Ok((4, 1)));
    assert_eq!(mailbox.push(direct(2)), Err(Full));
    assert_eq!(read_all(&mut mailbox, 0), [(2, vec![3, 4])]);
}

#[test]
fn skipped_ids_are_reported_as_missed_where_they_fell() {
    let mut mailbox = Mailbox::new(8, usize::MAX);
    mailbox.push(broadcast(2)).unwrap();
    mailbox.skip(3);
    // A gap at the end is reported before any event follows it.
    assert_eq!(read_all(&mut mailbox, 1), [(3, vec![])]);
    assert_eq!(mailbox.push(direct(2)), Ok((5, 0)));
    assert_eq!(read_all(&mut mailbox, 0), [(0, vec![1]), (3, vec![5])]);
}

#[test]
fn eviction_of_unread_events_is_reported_as_missed() {
    let mut mailbox = Mailbox::new(2, usize::MAX);
    for _ in 0..5 {
        mailbox.push(broadcast(2)).unwrap();
    }
    let replay = mailbox.replay_after(0, 10);
    assert_eq!(replay.missed, 3);
    assert_eq!(ids(&replay), [4, 5]);
    // A reader that had already seen up to 3 missed nothing: 4 and 5 are kept.
    assert_eq!(mailbox.replay_after(3, 10).missed, 0);
}

#[test]
fn broadcasts_never_evict_unread_direct_messages_and_each_gap_is_reported_where_it_is() {
    let mut mailbox = Mailbox::new(3, usize::MAX);
    mailbox.push(direct(2)).unwrap(); // 1
    mailbox.push(broadcast(2)).unwrap(); // 2
    mailbox.push(direct(2)).unwrap(); // 3
    // Full: each broadcast evicts the oldest unread broadcast, never a direct message.
    assert_eq!(mailbox.push(broadcast(2)), Ok((4, 1)));
    assert_eq!(mailbox.push(broadcast(2)), Ok((5, 1)));
    // A direct message evicts the last broadcast; then only direct messages are unread, so
    // a broadcast is dropped on arrival and a direct message refused.
    assert_eq!(mailbox.push(direct(2)), Ok((6, 1)));
    assert_eq!(mailbox.push(broadcast(2)), Ok((7, 1)));
    assert_eq!(mailbox.push(direct(2)), Err(Full));
    assert_eq!(mailbox.newest(), 7);

    assert_eq!(
        read_all(&mut mailbox, 0),
        [
            (0, vec![1]),
            (1, vec![3]),
            (2, vec![6]),
            (1, vec![]), // the dropped 7: nothing follows it yet
        ]
    );
    assert_eq!(mailbox.delivered(), 7);
    // Read now, the direct messages make room like any read event.
    assert_eq!(mailbox.push(direct(2)), Ok((8, 0)));
    assert_eq!(read_all(&mut mailbox, 7), [(0, vec![8])]);
}

#[test]
fn batches_are_limited_and_say_more_follows() {
    let mut mailbox = Mailbox::new(8, usize::MAX);
    for _ in 0..5 {
        mailbox.push(direct(2)).unwrap();
    }
    let first = mailbox.replay_after(0, 2);
    assert_eq!(ids(&first), [1, 2]);
    assert_eq!(first.through, 2);
    assert_eq!(mailbox.delivered(), 2);
    assert_eq!(mailbox.pending(), 3);
}

#[test]
fn the_byte_budget_evicts_broadcasts_and_refuses_direct_messages() {
    let each = 1000 + ENVELOPE_OVERHEAD;
    let mut mailbox = Mailbox::new(100, 3 * each);
    for _ in 0..3 {
        mailbox.push(direct(1000)).unwrap();
    }
    // A fourth unread direct message would pass the budget: refused, though slots are free.
    assert_eq!(mailbox.push(direct(1000)), Err(Full));
    // A broadcast finds no room beside them: dropped, and the reader learns it missed one.
    assert_eq!(mailbox.push(broadcast(1000)), Ok((4, 1)));
    assert_eq!(read_all(&mut mailbox, 0), [(0, vec![1, 2, 3]), (1, vec![])]);
    // Read events make room for a direct message without loss.
    assert_eq!(mailbox.push(direct(1000)), Ok((5, 0)));
    assert_eq!(mailbox.export().2.len(), 3);
}

#[test]
fn large_broadcasts_evict_each_other_but_not_a_direct_message() {
    let budget = 256 * 1024;
    let mut mailbox = Mailbox::new(100, budget);
    mailbox.push(direct(100)).unwrap();
    for n in 2..=10 {
        let (id, _) = mailbox.push(broadcast(60_000)).unwrap();
        assert_eq!(id, n);
        assert!(mailbox.bytes() <= budget);
    }
    // One larger than the whole budget is dropped rather than kept past it.
    assert_eq!(mailbox.push(broadcast(budget)), Ok((11, 1)));
    assert!(mailbox.bytes() <= budget);
    // Four 60 KB broadcasts fit beside the direct message: 7..=10 are kept.
    assert_eq!(
        read_all(&mut mailbox, 0),
        [(0, vec![1]), (5, vec![7, 8, 9, 10]), (1, vec![])]
    );
}

#[test]
fn a_cursor_from_the_future_replays_nothing() {
    let mut mailbox = Mailbox::new(2, usize::MAX);
    mailbox.push(direct(2)).unwrap();
    let replay = mailbox.replay_after(99, 10);
    assert!(replay.events.is_empty());
    assert_eq!((replay.missed, replay.through), (0, 1));
}

#[test]
fn export_and_import_keep_ids_gaps_and_what_was_read() {
    let mut mailbox = Mailbox::new(4, usize::MAX);
    mailbox.push(direct(2)).unwrap(); // 1, read below
    mailbox.replay_after(0, 10);
    mailbox.push(broadcast(2)).unwrap(); // 2
    mailbox.push(direct(2)).unwrap(); // 3
    mailbox.push(direct(2)).unwrap(); // 4
    mailbox.push(broadcast(2)).unwrap(); // 5 evicts 1 (read)
    mailbox.push(broadcast(2)).unwrap(); // 6 evicts 2
    let (last_id, delivered, entries) = mailbox.export();
    assert_eq!((last_id, delivered), (6, 1));
    assert_eq!(
        entries.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        [3, 4, 5, 6]
    );

    let mut same = Mailbox::import(4, usize::MAX, last_id, delivered, entries.clone());
    assert_eq!(same.pending(), 4);
    assert_eq!(read_all(&mut same, 1), [(1, vec![3, 4, 5, 6])]);

    // A smaller mailbox keeps the unread direct messages before the broadcasts...
    let mut smaller = Mailbox::import(2, usize::MAX, last_id, delivered, entries.clone());
    assert_eq!(read_all(&mut smaller, 1), [(1, vec![3, 4]), (2, vec![])]);
    // ...and, when they alone do not fit, the newest of them.
    let mut tiny = Mailbox::import(1, usize::MAX, last_id, delivered, entries);
    assert_eq!(read_all(&mut tiny, 1), [(2, vec![4]), (2, vec![])]);
}

#[test]
fn whatever_the_traffic_accepted_direct_messages_arrive_and_every_id_is_accounted_for() {
    let (capacity, budget) = (8, 8 * 1024);
    let mut mailbox = Mailbox::new(capacity, budget);
    let (mut accepted, mut seen, mut missed, mut cursor) = (Vec::new(), Vec::new(), 0, 0);
    // A fixed pseudo-random mix of direct messages, broadcasts of varied sizes and reads.
    let mut x: u64 = 1;
    for _ in 0..5000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let size = 2 + (x >> 40) as usize % 3000;
        match (x >> 33) % 10 {
            0..=2 => {
                if let Ok((id, _)) = mailbox.push(direct(size)) {
                    accepted.push(id);
                }
            }
            3..=7 => {
                mailbox.push(broadcast(size)).unwrap();
            }
            _ => {
                let replay = mailbox.replay_after(cursor, 3);
                missed += replay.missed;
                seen.extend(ids(&replay));
                cursor = replay.through;
            }
        }
        assert!(mailbox.len() <= capacity && mailbox.bytes() <= budget);
    }
    for (gap, run) in read_all(&mut mailbox, cursor) {
        missed += gap;
        seen.extend(run);
    }
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "ids strictly increase"
    );
    assert_eq!(missed + seen.len() as u64, mailbox.newest());
    assert!(accepted.iter().all(|id| seen.binary_search(id).is_ok()));
    assert!(
        accepted.len() > 100 && missed > 100,
        "the mix exercises both"
    );
}
