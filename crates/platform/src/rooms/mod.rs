//! Rooms (`room` daemon) and membership rules (`room-membership` daemon).
//!
//! # Where membership lives
//!
//! In the `members` JSON field of the `rooms` record (`[{userId, role, joinedAt}]`), the field the
//! built-in schema already has. The usual danger of a JSON list is lost updates from concurrent
//! read-modify-write; here the `room` daemon is the **only writer** of `members`: every join or
//! leave takes the daemon's membership lock, reads the record, changes the list and writes it back
//! with a version check (a conflict with a writer outside the platform, e.g. `data/update`, is
//! retried a bounded number of times). Joining is idempotent (a member joins again as a no-op),
//! so "unique (roomId, userId)" holds by construction. A room holds at most
//! [`RoomConfig::max_members`] members.
//!
//! Membership checks (`room/check`, used by `chat/send` on every message) are served from the
//! `room-members` LRU of parsed member sets (room id → set of user ids, tagged with the record
//! version), so sending to a big room does not parse its member list each time. The daemon keeps
//! it current on its own writes and drops an entry when a `data:rooms:updated` event carries a
//! newer version than the cached one (a change made by someone else).
//!
//! Names: rooms are addressed by name or id. The name is stored lowercased as the unique
//! `uniqueId`; `room-names` (LRU) maps names and ids to ids.
//!
//! The seed's RoomMembershipDaemon caught up after a fixed `setTimeout(2000)` and rewrote members
//! for every user. Here `room-membership` catches up in deferred init (pages of users, one
//! `room/join {userIds}` per page and room) and joins each new user on its
//! `data:users:created` event; both go through `room/join`, so the single-writer rule holds.
//!
//! Commands (`room`):
//! - `room/create {name, displayName?, description?, topic?, type?, ownerId?}` → the room (owner
//!   is the system user by default and is its first member)
//! - `room/get {room}` → the room with `memberCount`
//! - `room/list {type?, limit? (100, max 1000), cursor?}` → `{items, count, nextCursor}` (without
//!   `members`)
//! - `room/members {room}` → `{roomId, name, members}`
//! - `room/join {room, userId | userIds[≤1000], role?}` → `{roomId, name, joined, alreadyMembers,
//!   memberCount}`
//! - `room/leave {room, userId}` → `{roomId, name, left, memberCount}`
//! - `room/check {room, userId?}` → `{roomId, name, member}`

mod membership;
mod room;

pub use membership::{MembershipConfig, MembershipState, RoomMembershipDaemon};
pub use room::{RoomConfig, RoomDaemon, RoomState};
