//! The server API: whom the app's backend addresses ([`Target`]), what a publish reached
//! ([`Published`]), the paged session list that `GET /clients` shares with it ([`PageQuery`],
//! [`Page`]), and the hub's operations for it (`Hub::publish`, `Hub::disconnect`, `Hub::page`),
//! made of its own deliver, remove and list.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::Hub;
use crate::identity::{RoomName, SessionId};
use crate::registry::event::{Scope, ServerMessage};
use crate::registry::{Event, Peer, RegistryError};

/// Whom the backend addresses. On the wire `{"session": "<id>"}`, `{"user": "<sub>"}`,
/// `{"room": "<room>"}` or `"everyone"`: an omitted target is an error, never everyone by
/// accident.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Session(SessionId),
    User(String),
    Room(RoomName),
    Everyone,
}

/// What a publish reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// Sessions whose mailbox took the message.
    pub recipients: usize,
    /// Sessions of the user whose mailbox was full (a single session answers 429 instead).
    pub refused: usize,
}

/// One page of sessions: ids after `after` (exclusive), at most `limit`, optionally only one
/// user's.
#[derive(Clone, Debug, Default)]
pub struct PageQuery {
    pub after: Option<SessionId>,
    pub limit: usize,
    pub user: Option<String>,
}

/// Sessions in id order, and whether more follow the last of them.
#[derive(Debug)]
pub struct Page {
    pub peers: Vec<Peer>,
    pub more: bool,
}

impl PageQuery {
    /// The page `peers` (in any order) yield: a selection of the smallest ids, then a sort of
    /// only those, so a short page of a long list costs O(N), not O(N log N).
    pub fn select(&self, peers: Vec<Peer>) -> Page {
        let mut peers: Vec<Peer> = peers
            .into_iter()
            .filter(|peer| self.after.is_none_or(|after| peer.id > after))
            .filter(|peer| {
                self.user
                    .as_deref()
                    .is_none_or(|user| peer.user.as_deref() == Some(user))
            })
            .collect();
        let more = peers.len() > self.limit;
        if more && self.limit > 0 {
            peers.select_nth_unstable_by_key(self.limit - 1, |peer| peer.id);
        }
        peers.truncate(self.limit);
        peers.sort_unstable_by_key(|peer| peer.id);
        Page { peers, more }
    }
}

/// What the app's backend may do, the same in both modes: each operation is made of the hub's
/// own (deliver, remove, list), plus one broker message for "everyone".
impl Hub {
    /// Session `id` as others see it, wherever it lives; `None` when there is no such session.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn peer(&self, id: SessionId) -> Result<Option<Peer>, RegistryError> {
        self.broker.peer(id).await
    }

    /// One page of the sessions.
    ///
    /// # Errors
    /// `Unavailable`.
    pub async fn page(&self, query: &PageQuery) -> Result<Page, RegistryError> {
        Ok(query.select(self.list().await?))
    }

    /// The sessions of `user`, in id order.
    async fn sessions_of(&self, user: &str) -> Result<Vec<Peer>, RegistryError> {
        let query = PageQuery {
            limit: usize::MAX,
            user: Some(user.to_owned()),
            ..PageQuery::default()
        };
        Ok(self.page(&query).await?.peers)
    }

    /// A `server_message` to `to`. A session's message is kept like a direct message (never
    /// evicted unread); so is a user's, in each of their sessions; one to everyone is fanned
    /// out like a broadcast.
    ///
    /// # Errors
    /// For a session: `UnknownRecipient`, `MailboxFull`. `Unavailable` for any.
    pub async fn publish(
        &self,
        to: &Target,
        message: Box<RawValue>,
    ) -> Result<Published, RegistryError> {
        let addressed = |to, message| {
            Event::ServerMessage(ServerMessage {
                to,
                room: None,
                message,
            })
        };
        match to {
            Target::Session(id) => {
                self.deliver_event(*id, addressed(Scope::Session, message))
                    .await?;
                Ok(Published {
                    recipients: 1,
                    refused: 0,
                })
            }
            Target::User(user) => {
                let mut published = Published::default();
                for peer in self.sessions_of(user).await? {
                    let event = addressed(Scope::User, message.clone());
                    match self.deliver_event(peer.id, event).await {
                        Ok(_) => published.recipients += 1,
                        Err(RegistryError::MailboxFull { .. }) => published.refused += 1,
                        // Left meanwhile: not a recipient.
                        Err(RegistryError::UnknownRecipient(_)) => {}
                        Err(err) => return Err(err),
                    }
                }
                Ok(published)
            }
            Target::Room(room) => {
                let recipients = self.broker.announce(message, Some(room.clone())).await?;
                Ok(Published {
                    recipients,
                    refused: 0,
                })
            }
            Target::Everyone => {
                let recipients = self.broker.announce(message, None).await?;
                Ok(Published {
                    recipients,
                    refused: 0,
                })
            }
        }
    }

    /// Ends the sessions `target` names, as if each had left: its stream closes and the members
    /// of its rooms hear `user_left`. Returns how many there were.
    ///
    /// # Errors
    /// `UnknownSession` for a session that is not registered; `Unavailable`.
    pub async fn disconnect(&self, target: &Target) -> Result<usize, RegistryError> {
        let peers = self.targeted(target).await?;
        for peer in &peers {
            self.remove(peer).await?;
        }
        Ok(peers.len())
    }

    /// The sessions `target` names.
    ///
    /// # Errors
    /// `UnknownSession` for a session that is not registered; `Unavailable`.
    pub(super) async fn targeted(&self, target: &Target) -> Result<Vec<Peer>, RegistryError> {
        Ok(match target {
            Target::Session(id) => vec![
                self.peer(*id)
                    .await?
                    .ok_or(RegistryError::UnknownSession(*id))?,
            ],
            Target::User(user) => self.sessions_of(user).await?,
            Target::Room(room) => self.room_members(room).await?,
            Target::Everyone => self.list().await?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DisplayName;

    fn peer(n: u128, user: Option<&str>) -> Peer {
        Peer {
            id: SessionId::parse(&uuid::Uuid::from_u128(n).to_string()).unwrap(),
            name: DisplayName::parse(&format!("p{n}")).unwrap(),
            user: user.map(str::to_owned),
        }
    }

    fn ids(page: &Page) -> Vec<u128> {
        page.peers
            .iter()
            .map(|p| uuid::Uuid::parse_str(&p.id.to_string()).unwrap().as_u128())
            .collect()
    }

    #[test]
    fn pages_walk_the_ids_in_order() {
        let all: Vec<Peer> = [5, 1, 4, 2, 3].iter().map(|&n| peer(n, None)).collect();
        let first = PageQuery {
            limit: 2,
            ..PageQuery::default()
        }
        .select(all.clone());
        assert_eq!((ids(&first), first.more), (vec![1, 2], true));
        let last = PageQuery {
            after: Some(first.peers[1].id),
            limit: 3,
            user: None,
        }
        .select(all.clone());
        assert_eq!((ids(&last), last.more), (vec![3, 4, 5], false));
        let empty = PageQuery {
            limit: 0,
            ..PageQuery::default()
        }
        .select(all);
        assert_eq!((ids(&empty), empty.more), (vec![], true));
    }

    #[test]
    fn a_user_filter_keeps_only_their_sessions() {
        let all = vec![
            peer(1, Some("u")),
            peer(2, Some("v")),
            peer(3, Some("u")),
            peer(4, None),
        ];
        let page = PageQuery {
            limit: 10,
            user: Some("u".into()),
            ..PageQuery::default()
        }
        .select(all);
        assert_eq!((ids(&page), page.more), (vec![1, 3], false));
    }

    #[test]
    fn targets_read_as_documented() {
        let id = "67e55044-10b1-426f-9247-bb680e5fe0c8";
        let session: Target = serde_json::from_str(&format!(r#"{{"session":"{id}"}}"#)).unwrap();
        assert_eq!(session, Target::Session(SessionId::parse(id).unwrap()));
        let user: Target = serde_json::from_str(r#"{"user":"auth0|42"}"#).unwrap();
        assert_eq!(user, Target::User("auth0|42".into()));
        let everyone: Target = serde_json::from_str(r#""everyone""#).unwrap();
        assert_eq!(everyone, Target::Everyone);
        assert!(serde_json::from_str::<Target>(r#"{}"#).is_err());
    }
}
