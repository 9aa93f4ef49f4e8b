//! Pure rules of groups: names, who may do what, and what a change leaves
//! behind (the roster after it and the notice that records it).

use mongodb::bson::DateTime;
use mongodb::bson::oid::ObjectId;

use crate::error::ChatError;
use crate::model::{ChatDoc, Notice, Role, RosterEntry};

/// Longest group name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Fewest other members a group is created with.
pub const MIN_OTHERS: usize = 2;

/// Users one request may add, at most (beyond that, several requests).
pub const MAX_ADD_AT_ONCE: usize = 256;

/// A change to a group, asked for by a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A new name (owner and admins).
    Rename(String),
    /// New members (owner and admins).
    Add(Vec<ObjectId>),
    /// A member out (the owner anyone; admins plain members).
    Remove(ObjectId),
    /// The caller goes (anyone); an owner leaving hands the group to the
    /// oldest admin, or else the oldest member.
    Leave,
    /// A member becomes admin or plain member again (owner only).
    SetRole(ObjectId, Role),
    /// Another member becomes owner; the owner becomes an admin (owner only).
    TransferOwnership(ObjectId),
}

/// What a change leaves behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The roster after it (join order kept).
    pub roster: Vec<RosterEntry>,
    /// The name after it.
    pub name: String,
    /// The system message's record of it.
    pub notice: Notice,
    /// Who joined.
    pub added: Vec<ObjectId>,
    /// Who is no longer a member.
    pub removed: Vec<ObjectId>,
}

impl Outcome {
    /// The member ids, in join order.
    pub fn members(&self) -> Vec<ObjectId> {
        self.roster.iter().map(|e| e.user).collect()
    }
}

/// Checks a group name: trimmed, 1 to [`MAX_NAME_CHARS`] characters,
/// whitespace collapsed, no control or direction-override characters.
pub fn validate_name(raw: &str) -> Result<String, ChatError> {
    let invisible =
        |c: char| c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
    if raw.chars().any(|c| invisible(c) && c != ' ') {
        return Err(ChatError::invalid(
            "name must not hold control or direction characters",
        ));
    }
    let name = raw.split_whitespace().collect::<Vec<_>>().join(" ");
    let chars = name.chars().count();
    if chars == 0 {
        return Err(ChatError::invalid("name must not be empty"));
    }
    if chars > MAX_NAME_CHARS {
        return Err(ChatError::invalid(format!(
            "name is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(name)
}

/// Pure: the members of a new group of `creator` with `others`: distinct,
/// without the creator, [`MIN_OTHERS`] to `max_others` of them.
pub fn new_members(
    creator: &ObjectId,
    others: &[ObjectId],
    max_others: usize,
) -> Result<Vec<ObjectId>, ChatError> {
    let mut distinct: Vec<ObjectId> = Vec::with_capacity(others.len());
    for id in others.iter().filter(|id| *id != creator) {
        if !distinct.contains(id) {
            distinct.push(*id);
        }
    }
    if distinct.len() < MIN_OTHERS || distinct.len() > max_others {
        return Err(ChatError::invalid(format!(
            "a group needs {MIN_OTHERS} to {max_others} members besides you"
        )));
    }
    Ok(distinct)
}

/// Pure: the roster of a new group: the creator owns it, everyone joined
/// before its first message.
pub fn first_roster(creator: &ObjectId, others: &[ObjectId], at: DateTime) -> Vec<RosterEntry> {
    std::iter::once((creator, Role::Owner))
        .chain(others.iter().map(|o| (o, Role::Member)))
        .map(|(user, role)| RosterEntry {
            user: *user,
            role,
            joined_seq: 0,
            joined_at: at,
        })
        .collect()
}

fn notice(action: &str, actor: &ObjectId, users: Vec<ObjectId>, name: &str) -> Notice {
    Notice {
        action: action.to_owned(),
        actor: *actor,
        users,
        name: Some(name.to_owned()),
        role: None,
    }
}

/// Pure: what `action` by `actor` does to `group` at `now` (new members
/// see messages after the chat's current last seq), or why it may not
/// happen. `max_others` bounds the members besides any one of them.
pub fn apply(
    group: &ChatDoc,
    actor: &ObjectId,
    action: &Action,
    max_others: usize,
    now: DateTime,
) -> Result<Outcome, ChatError> {
    let role = group
        .role_of(actor)
        .ok_or(ChatError::Forbidden("you are not a member of this group"))?;
    let name = group.name.clone().unwrap_or_default();
    let mut roster = group.roster.clone();
    let managers_only = || {
        if role.manages() {
            Ok(())
        } else {
            Err(ChatError::Forbidden(
                "only the owner and admins can do this",
            ))
        }
    };
    let owner_only = || {
        if role == Role::Owner {
            Ok(())
        } else {
            Err(ChatError::Forbidden("only the owner can do this"))
        }
    };
    let target_role = |user: &ObjectId| {
        group
            .role_of(user)
            .ok_or(ChatError::NotFound("no such member"))
    };
    let (notice, added, removed) = match action {
        Action::Rename(new) => {
            managers_only()?;
            let new = validate_name(new)?;
            let n = notice("renamed", actor, Vec::new(), &new);
            return Ok(Outcome {
                roster,
                name: new,
                notice: n,
                added: Vec::new(),
                removed: Vec::new(),
            });
        }
        Action::Add(users) => {
            managers_only()?;
            let mut fresh: Vec<ObjectId> = Vec::new();
            for user in users {
                if group.role_of(user).is_none() && !fresh.contains(user) {
                    fresh.push(*user);
                }
            }
            if fresh.is_empty() {
                return Err(ChatError::Conflict("they are all members already"));
            }
            if roster.len() + fresh.len() > max_others + 1 {
                return Err(ChatError::invalid(format!(
                    "a group holds at most {} members",
                    max_others + 1
                )));
            }
            roster.extend(fresh.iter().map(|user| RosterEntry {
                user: *user,
                role: Role::Member,
                joined_seq: group.last_seq,
                joined_at: now,
            }));
            (
                notice("added", actor, fresh.clone(), &name),
                fresh,
                Vec::new(),
            )
        }
        Action::Remove(user) => {
            managers_only()?;
            if user == actor {
                return Err(ChatError::invalid("to leave the group, use leave"));
            }
            let theirs = target_role(user)?;
            if theirs == Role::Owner || (theirs == Role::Admin && role != Role::Owner) {
                return Err(ChatError::Forbidden(
                    "only the owner can remove an admin, and nobody the owner",
                ));
            }
            roster.retain(|e| e.user != *user);
            (
                notice("removed", actor, vec![*user], &name),
                Vec::new(),
                vec![*user],
            )
        }
        Action::Leave => {
            roster.retain(|e| e.user != *actor);
            let mut users = Vec::new();
            if role == Role::Owner
                && let Some(heir) = heir(&roster)
            {
                roster[heir].role = Role::Owner;
                users.push(roster[heir].user);
            }
            (
                notice("left", actor, users, &name),
                Vec::new(),
                vec![*actor],
            )
        }
        Action::SetRole(user, new_role) => {
            owner_only()?;
            if *new_role == Role::Owner {
                return Err(ChatError::invalid(
                    "to hand the group over, transfer ownership",
                ));
            }
            if target_role(user)? == Role::Owner {
                return Err(ChatError::invalid(
                    "the owner's role changes only with a transfer",
                ));
            }
            for entry in roster.iter_mut().filter(|e| e.user == *user) {
                entry.role = *new_role;
            }
            let mut n = notice("roleChanged", actor, vec![*user], &name);
            n.role = Some(*new_role);
            (n, Vec::new(), Vec::new())
        }
        Action::TransferOwnership(user) => {
            owner_only()?;
            if user == actor {
                return Err(ChatError::invalid("you own this group already"));
            }
            target_role(user)?;
            for entry in &mut roster {
                if entry.user == *user {
                    entry.role = Role::Owner;
                } else if entry.user == *actor {
                    entry.role = Role::Admin;
                }
            }
            (
                notice("ownerChanged", actor, vec![*user], &name),
                Vec::new(),
                Vec::new(),
            )
        }
    };
    Ok(Outcome {
        roster,
        name,
        notice,
        added,
        removed,
    })
}

/// Pure: who inherits a group whose owner left: the oldest admin, or else
/// the oldest member (the roster is in join order); `None` when empty.
pub fn heir(roster: &[RosterEntry]) -> Option<usize> {
    roster
        .iter()
        .position(|e| e.role == Role::Admin)
        .or_else(|| (!roster.is_empty()).then_some(0))
}

/// Pure: the short line a system message shows in chat lists.
pub fn preview(notice: &Notice) -> String {
    let n = notice.users.len();
    let members = if n == 1 {
        "a member".to_owned()
    } else {
        format!("{n} members")
    };
    match notice.action.as_str() {
        "created" => "created the group".to_owned(),
        "renamed" => "renamed the group".to_owned(),
        "added" => format!("added {members}"),
        "removed" => "removed a member".to_owned(),
        "left" => "left the group".to_owned(),
        "roleChanged" => "changed a member's role".to_owned(),
        "ownerChanged" => "handed the group over".to_owned(),
        other => other.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ChatKind;

    fn group(roles: &[(ObjectId, Role)]) -> ChatDoc {
        let now = DateTime::now();
        let members = roles.iter().map(|(u, _)| *u).collect();
        ChatDoc {
            last_seq: 7,
            last_change: 7,
            kind: ChatKind::Group,
            name: Some("Team".into()),
            roster: roles
                .iter()
                .map(|(user, role)| RosterEntry {
                    user: *user,
                    role: *role,
                    joined_seq: 0,
                    joined_at: now,
                })
                .collect(),
            ..ChatDoc::empty(ObjectId::new(), members, "group:x".into(), now)
        }
    }

    fn ids<const N: usize>() -> [ObjectId; N] {
        std::array::from_fn(|_| ObjectId::new())
    }

    #[test]
    fn names_are_trimmed_bounded_and_plain() {
        assert_eq!(validate_name("  Design   team ").unwrap(), "Design team");
        assert!(validate_name("   ").is_err());
        assert!(validate_name(&"é".repeat(64)).is_ok());
        assert!(validate_name(&"é".repeat(65)).is_err());
        assert!(validate_name("a\nb").is_err());
        assert!(validate_name("evil\u{202E}gnp.exe").is_err());
    }

    #[test]
    fn new_groups_need_two_to_max_others_without_repeats() {
        let [me, a, b, c] = ids();
        assert!(new_members(&me, &[a], 5).is_err());
        assert!(
            new_members(&me, &[a, a, me], 5).is_err(),
            "one distinct other"
        );
        assert_eq!(new_members(&me, &[a, b, a, me], 5).unwrap(), vec![a, b]);
        assert!(new_members(&me, &[a, b, c], 2).is_err());
        let roster = first_roster(&me, &[a, b], DateTime::now());
        assert_eq!(
            roster.iter().map(|e| e.role).collect::<Vec<_>>(),
            [Role::Owner, Role::Member, Role::Member]
        );
        assert!(roster.iter().all(|e| e.joined_seq == 0));
    }

    #[test]
    fn only_managers_rename_and_add_and_new_members_join_after_the_last_seq() {
        let [owner, admin, member, new] = ids();
        let g = group(&[
            (owner, Role::Owner),
            (admin, Role::Admin),
            (member, Role::Member),
        ]);
        let now = DateTime::now();
        let renamed = apply(&g, &admin, &Action::Rename(" Ops ".into()), 10, now).unwrap();
        assert_eq!(renamed.name, "Ops");
        assert_eq!(renamed.notice.action, "renamed");
        let refused = apply(&g, &member, &Action::Rename("x".into()), 10, now);
        assert_eq!(refused.unwrap_err().code(), "forbidden");
        let added = apply(&g, &admin, &Action::Add(vec![new, member, new]), 10, now).unwrap();
        assert_eq!(added.added, vec![new]);
        let entry = added.roster.last().unwrap();
        assert_eq!(
            (entry.user, entry.role, entry.joined_seq),
            (new, Role::Member, 7)
        );
        assert_eq!(
            apply(&g, &admin, &Action::Add(vec![member]), 10, now)
                .unwrap_err()
                .code(),
            "conflict"
        );
        assert!(
            apply(&g, &owner, &Action::Add(vec![new]), 2, now).is_err(),
            "4 members where 3 fit"
        );
        let stranger = ObjectId::new();
        assert_eq!(
            apply(&g, &stranger, &Action::Leave, 10, now)
                .unwrap_err()
                .code(),
            "forbidden"
        );
    }

    #[test]
    fn removal_follows_rank() {
        let [owner, admin, admin2, member] = ids();
        let g = group(&[
            (owner, Role::Owner),
            (admin, Role::Admin),
            (admin2, Role::Admin),
            (member, Role::Member),
        ]);
        let now = DateTime::now();
        let out = apply(&g, &admin, &Action::Remove(member), 10, now).unwrap();
        assert_eq!(out.removed, vec![member]);
        assert!(!out.members().contains(&member));
        assert!(apply(&g, &admin, &Action::Remove(admin2), 10, now).is_err());
        assert!(apply(&g, &admin, &Action::Remove(owner), 10, now).is_err());
        assert!(apply(&g, &owner, &Action::Remove(admin2), 10, now).is_ok());
        assert!(apply(&g, &member, &Action::Remove(admin), 10, now).is_err());
        assert!(apply(&g, &owner, &Action::Remove(owner), 10, now).is_err());
        assert_eq!(
            apply(&g, &owner, &Action::Remove(ObjectId::new()), 10, now)
                .unwrap_err()
                .code(),
            "not_found"
        );
    }

    #[test]
    fn an_owner_leaving_hands_over_to_the_oldest_admin_or_member() {
        let [owner, m1, a1, m2] = ids();
        let now = DateTime::now();
        let g = group(&[
            (owner, Role::Owner),
            (m1, Role::Member),
            (a1, Role::Admin),
            (m2, Role::Member),
        ]);
        let out = apply(&g, &owner, &Action::Leave, 10, now).unwrap();
        assert_eq!(out.removed, vec![owner]);
        assert_eq!(out.notice.users, vec![a1], "the admin, though younger");
        assert_eq!(
            out.roster.iter().find(|e| e.user == a1).map(|e| e.role),
            Some(Role::Owner)
        );
        let g = group(&[(owner, Role::Owner), (m1, Role::Member), (m2, Role::Member)]);
        let out = apply(&g, &owner, &Action::Leave, 10, now).unwrap();
        assert_eq!(out.roster[0].user, m1);
        assert_eq!(out.roster[0].role, Role::Owner);
        let out = apply(&g, &m2, &Action::Leave, 10, now).unwrap();
        assert_eq!(
            out.roster[0].role,
            Role::Owner,
            "a member leaving changes no owner"
        );
        assert!(out.notice.users.is_empty());
        let alone = group(&[(owner, Role::Owner)]);
        assert!(
            apply(&alone, &owner, &Action::Leave, 10, now)
                .unwrap()
                .roster
                .is_empty()
        );
    }

    #[test]
    fn roles_and_ownership_are_the_owners_to_give() {
        let [owner, admin, member] = ids();
        let now = DateTime::now();
        let g = group(&[
            (owner, Role::Owner),
            (admin, Role::Admin),
            (member, Role::Member),
        ]);
        let promoted = apply(&g, &owner, &Action::SetRole(member, Role::Admin), 10, now).unwrap();
        assert_eq!(promoted.roster[2].role, Role::Admin);
        assert_eq!(promoted.notice.role, Some(Role::Admin));
        assert!(apply(&g, &admin, &Action::SetRole(member, Role::Admin), 10, now).is_err());
        assert!(apply(&g, &owner, &Action::SetRole(member, Role::Owner), 10, now).is_err());
        assert!(apply(&g, &owner, &Action::SetRole(owner, Role::Member), 10, now).is_err());
        let handed = apply(&g, &owner, &Action::TransferOwnership(member), 10, now).unwrap();
        assert_eq!(
            handed.roster.iter().map(|e| e.role).collect::<Vec<_>>(),
            [Role::Admin, Role::Admin, Role::Owner]
        );
        assert!(apply(&g, &admin, &Action::TransferOwnership(member), 10, now).is_err());
        assert!(apply(&g, &owner, &Action::TransferOwnership(owner), 10, now).is_err());
    }

    #[test]
    fn previews_name_no_one() {
        let [actor, a, b] = ids();
        let mut n = notice("added", &actor, vec![a, b], "Team");
        assert_eq!(preview(&n), "added 2 members");
        n.users.pop();
        assert_eq!(preview(&n), "added a member");
        n.action = "left".into();
        assert_eq!(preview(&n), "left the group");
    }
}
