//! Who a caller ARN names: the role it acts in and the person behind it. One parse of the
//! ARN for the two questions asked of it: is the caller in a role ([`assumes`]), and whose
//! budget does it spend ([`Principal::of`]).
//!
//! An assumed-role session `arn:P:sts::A:assumed-role/ROLE/SESSION` is the person SESSION of
//! role ROLE in account A. The template's staff role lets a person assume it only with
//! `sts:RoleSessionName` = `${aws:username}` (docs/security.md), so SESSION is the person's
//! IAM user name, which IAM compares case-insensitively: `alice` and `Alice` are one person.
//! Role names are case-insensitive too, and a role's path is not part of the session ARN.

/// A caller's budget keys: the person, and the role that bounds all its sessions together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `role:P:A:ROLE` (lower case) for a session or the role itself; else the whole ARN.
    pub role: String,
    /// `person:P:A:ROLE/SESSION` (lower case); the role itself is its own person.
    pub person: String,
}

/// The parts of a role ARN or an assumed-role session ARN.
struct Parsed<'a> {
    partition: &'a str,
    account: &'a str,
    /// The role's name, without its path.
    role: &'a str,
    /// The session name, for an assumed-role session.
    session: Option<&'a str>,
}

fn parse<'a>(arn: &'a str) -> Option<Parsed<'a>> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(service), Some(""), Some(account), Some(resource)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let parsed = |role: &'a str, session| {
        (!partition.is_empty() && !account.is_empty() && !role.is_empty()).then_some(Parsed {
            partition,
            account,
            role,
            session,
        })
    };
    match (service, resource.split_once('/')) {
        ("iam", Some(("role", path_name))) => parsed(path_name.rsplit('/').next().unwrap_or(path_name), None),
        ("sts", Some(("assumed-role", role_session))) => {
            let (role, session) = role_session.split_once('/')?;
            (!session.is_empty() && !session.contains('/')).then_some(())?;
            parsed(role, Some(session))
        }
        _ => None,
    }
}

impl Principal {
    /// The budget keys of `caller`. A caller that is neither a role nor a session (the local
    /// stack's identity, an IAM user) is its own role and person, case-insensitively.
    pub fn of(caller: &str) -> Principal {
        match parse(caller) {
            Some(p) => {
                let role = format!("{}:{}:{}", p.partition, p.account, p.role).to_lowercase();
                let person = match p.session {
                    Some(session) => format!("person:{role}/{}", session.to_lowercase()),
                    None => format!("person:{role}"),
                };
                Principal { role: format!("role:{role}"), person }
            }
            None => Principal {
                role: format!("role:{}", caller.to_lowercase()),
                person: format!("person:{}", caller.to_lowercase()),
            },
        }
    }
}

/// A SQL `ILIKE` pattern (escape `\\`) for the callers that count as one against the limit
/// of refusal rows. A caller in one of the service's roles (`bound_session`: the staff and
/// key-admin roles, whose trust policy binds the session name to the person) is one person,
/// whatever the case of its name: one member cannot spend another's limit. Any other
/// assumed role counts every session as one (its session names are the caller's to
/// choose); anything else is the caller itself.
pub fn refusal_scope(caller: &str, bound_session: bool) -> String {
    let escape = |text: &str| text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    match parse(caller) {
        Some(Parsed { session: Some(session), .. }) if !bound_session => {
            let prefix = &caller[..caller.len() - session.len()];
            format!("{}%", escape(prefix))
        }
        _ => escape(caller),
    }
}

/// Whether `caller` (an assumed-role session of the role, or the role itself) is in the
/// role `role_arn`.
pub fn assumes(caller: &str, role_arn: &str) -> bool {
    if caller == role_arn {
        return true;
    }
    match (parse(caller), parse(role_arn)) {
        (Some(caller), Some(role)) => {
            caller.session.is_some()
                && role.session.is_none()
                && (caller.partition, caller.account, caller.role)
                    == (role.partition, role.account, role.role)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_scope_of_a_session_is_its_person_in_a_bound_role_else_every_session_of_its_role() {
        assert_eq!(
            refusal_scope("arn:aws:sts::123456789012:assumed-role/dev_ops/m-1", false),
            "arn:aws:sts::123456789012:assumed-role/dev\\_ops/%"
        );
        assert_eq!(
            refusal_scope("arn:aws:sts::123456789012:assumed-role/pii-vault-staff/a_b", true),
            "arn:aws:sts::123456789012:assumed-role/pii-vault-staff/a\\_b"
        );
        assert_eq!(
            refusal_scope("arn:aws:iam::123456789012:user/a%b", false),
            "arn:aws:iam::123456789012:user/a\\%b"
        );
        assert_eq!(refusal_scope("(no IAM identity)", false), "(no IAM identity)");
    }

    #[test]
    fn an_assumed_role_session_is_its_role_and_nothing_else_is() {
        let role = "arn:aws:iam::123456789012:role/team/pii-vault-staff";
        assert!(assumes("arn:aws:sts::123456789012:assumed-role/pii-vault-staff/alice", role));
        assert!(assumes(role, role));
        assert!(!assumes("arn:aws:sts::999999999999:assumed-role/pii-vault-staff/alice", role));
        assert!(!assumes("arn:aws:sts::123456789012:assumed-role/pii-vault-staff-x/alice", role));
        assert!(!assumes("arn:aws:sts::123456789012:assumed-role/pii-vault-staff/", role));
        assert!(!assumes("arn:aws:sts::123456789012:assumed-role/pii-vault-staff/a/b", role));
        assert!(!assumes("arn:aws:iam::123456789012:user/pii-vault-staff", role));
        assert!(!assumes("arn:aws-cn:sts::123456789012:assumed-role/pii-vault-staff/alice", role));
    }

    #[test]
    fn one_person_whatever_the_case_of_the_session_name_and_one_role_for_all_its_sessions() {
        let alice = Principal::of("arn:aws:sts::123456789012:assumed-role/pii-vault-staff/alice");
        for spelling in ["Alice", "ALICE", "aLiCe"] {
            let other =
                Principal::of(&format!("arn:aws:sts::123456789012:assumed-role/Pii-Vault-Staff/{spelling}"));
            assert_eq!(other, alice, "{spelling}");
        }
        let bob = Principal::of("arn:aws:sts::123456789012:assumed-role/pii-vault-staff/bob");
        assert_ne!(bob.person, alice.person);
        assert_eq!(bob.role, alice.role);
        // The role itself, whatever its path, is that role (and its own person).
        let role = Principal::of("arn:aws:iam::123456789012:role/team/pii-vault-staff");
        assert_eq!(role.role, alice.role);
        assert_ne!(role.person, alice.person);
        // Another account's role of the same name is another role.
        let foreign = Principal::of("arn:aws:sts::999999999999:assumed-role/pii-vault-staff/alice");
        assert_ne!(foreign.role, alice.role);
        assert_eq!(Principal::of("local:Dev"), Principal::of("local:dev"));
    }
}
