//! Accounts of the Trust Server (`/mtwilson/v2/users`, admin only).
//!
//! | route | body | answer |
//! |---|---|---|
//! | `GET /mtwilson/v2/users` | | `200 {"users": [UserView]}` |
//! | `POST /mtwilson/v2/users` | [`NewUser`] | `201 UserView`; `409` when the name is taken |
//! | `PUT /mtwilson/v2/users/{name}/password` | [`NewPassword`] | `200 UserView`; `404` |
//! | `DELETE /mtwilson/v2/users/{name}` | | `204`; `404`; `409` for the last admin |
//!
//! Passwords travel only in requests, never in an answer, and are stored as argon2id hashes.

use serde::{Deserialize, Serialize};

/// An account's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum UserRole {
    /// Everything.
    Admin,
    /// Read hosts, flavors and reports (the labeller, pollers, dashboards).
    Reader,
    /// Register, report (re)starts, read `tpm-endorsements` (the runbook's agent account).
    Agent,
}

impl UserRole {
    /// `admin`, `reader`, `agent`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Reader => "reader",
            Self::Agent => "agent",
        }
    }

    /// Parses [`as_str`](Self::as_str)'s output.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "reader" => Some(Self::Reader),
            "agent" => Some(Self::Agent),
            _ => None,
        }
    }
}

impl std::fmt::Display for UserRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An account as the API shows it (never its password or hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserView {
    /// User name.
    pub name: String,
    /// Role.
    pub role: UserRole,
    /// RFC 3339, when created or last changed.
    #[cfg_attr(feature = "openapi", schema(format = DateTime))]
    pub created: String,
}

/// The list answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserList {
    /// Accounts, by name.
    pub users: Vec<UserView>,
}

/// `POST /mtwilson/v2/users`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// 1-64 characters of letters, digits, `-`, `_`, `.`, `@`.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._@-]+$")
    )]
    pub name: String,
    /// Role.
    pub role: UserRole,
    /// 12-1024 characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 12, max_length = 1024))]
    pub password: String,
}

/// `PUT /mtwilson/v2/users/{name}/password`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    /// 12-1024 characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 12, max_length = 1024))]
    pub password: String,
}

/// Shortest password accepted for a new account or a password change.
pub const MIN_PASSWORD_LEN: usize = 12;
/// Longest password accepted (argon2 input is bounded).
pub const MAX_PASSWORD_LEN: usize = 1024;
/// Longest user name.
pub const MAX_USER_NAME_LEN: usize = 64;

/// Whether `name` is an acceptable user name.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_USER_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}
