//! `nodetrust user add|list|passwd|delete`: the Trust Server's accounts
//! (`/mtwilson/v2/users`, admin only; the contract is [`nodetrust_proto::users`]).
//!
//! A new password is never taken from a command-line value (it would be in the shell history
//! and in `ps`): it is the first line of `--new-password-file FILE`, or of stdin when stdin is
//! not a terminal (`printf '%s\n' "$PW" | nodetrust user add ...`). It is checked here for the
//! server's length bounds before anything is sent, and never printed.
//!
//! Exit codes as for every server command: 0 done; 1 the server refused (its reason: name
//! taken, no such user, the last admin...); 2 bad arguments, no password, no connection, TLS.

use std::io::{BufRead as _, IsTerminal as _, Read as _};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use nodetrust_proto::users::{
    valid_user_name, NewPassword, NewUser, UserRole, MAX_PASSWORD_LEN, MAX_USER_NAME_LEN,
    MIN_PASSWORD_LEN,
};
use serde_json::{json, Value};

use crate::client::{encode, Answer, Client, ServerArgs};
use crate::output::{outln, printable, truncate};
use crate::CliError;

const USERS: &str = "/mtwilson/v2/users";

/// `nodetrust user ...`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Add an account with a role. The password is the first line of --new-password-file, or
    /// of stdin when stdin is not a terminal; 12 to 1024 characters. Needs an admin account.
    Add(UserAdd),
    /// List accounts: NAME, ROLE, CREATED. Needs an admin account.
    List(UserList),
    /// Set an account's password, read as for `add`. Needs an admin account.
    Passwd(UserPasswd),
    /// Delete an account (the last admin cannot be deleted). Needs an admin account.
    Delete(UserDelete),
}

/// A role as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Reads hosts, flavors and reports (labeller, pollers, dashboards).
    Reader,
    /// Everything, accounts included.
    Admin,
    /// Registers hosts and reports agent starts (the Trust Agent's account).
    Agent,
}

impl From<Role> for UserRole {
    fn from(r: Role) -> Self {
        match r {
            Role::Reader => UserRole::Reader,
            Role::Admin => UserRole::Admin,
            Role::Agent => UserRole::Agent,
        }
    }
}

/// `user add` arguments.
#[derive(Debug, Args)]
pub struct UserAdd {
    /// The new account's name: 1-64 letters, digits, `-`, `_`, `.`, `@`.
    #[arg(value_name = "NAME")]
    name: String,
    /// Its role.
    #[arg(long, value_enum)]
    role: Role,
    /// Read the new account's password from this file (its first line). [default: stdin,
    /// when it is not a terminal]
    #[arg(long, value_name = "FILE")]
    new_password_file: Option<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
}

/// `user list` arguments.
#[derive(Debug, Args)]
pub struct UserList {
    #[command(flatten)]
    server: ServerArgs,
}

/// `user passwd` arguments.
#[derive(Debug, Args)]
pub struct UserPasswd {
    /// The account.
    #[arg(value_name = "NAME")]
    name: String,
    /// Read the new password from this file (its first line). [default: stdin, when it is
    /// not a terminal]
    #[arg(long, value_name = "FILE")]
    new_password_file: Option<PathBuf>,
    #[command(flatten)]
    server: ServerArgs,
}

/// `user delete` arguments.
#[derive(Debug, Args)]
pub struct UserDelete {
    /// The account.
    #[arg(value_name = "NAME")]
    name: String,
    #[command(flatten)]
    server: ServerArgs,
}

/// Runs `nodetrust user ...`.
pub fn run(c: UserCommand) -> Result<(), CliError> {
    match c {
        UserCommand::Add(a) => {
            check_name(&a.name)?;
            let password = new_password(a.new_password_file.as_deref())?;
            let client = Client::new(&a.server)?;
            let body = NewUser {
                name: a.name.clone(),
                role: a.role.into(),
                password,
            };
            let answer = client.post(USERS, &to_json(&body)?)?;
            if a.server.json() {
                answer.print_raw();
                return Ok(());
            }
            let v = answer.json()?;
            outln!(
                "added user {} (role {})",
                shown(v.get("name").unwrap_or(&json!(a.name))),
                shown(
                    v.get("role")
                        .unwrap_or(&json!(UserRole::from(a.role).as_str()))
                )
            );
            Ok(())
        }
        UserCommand::List(a) => {
            let client = Client::new(&a.server)?;
            let answer = client.get(USERS)?;
            if a.server.json() {
                answer.print_raw();
                return Ok(());
            }
            print_users(&answer)
        }
        UserCommand::Passwd(a) => {
            check_name(&a.name)?;
            let password = new_password(a.new_password_file.as_deref())?;
            let client = Client::new(&a.server)?;
            let answer = client.put(
                &format!("{USERS}/{}/password", encode(&a.name)),
                &to_json(&NewPassword { password })?,
            )?;
            if a.server.json() {
                print_or(&answer, json!({"name": a.name, "password_changed": true}));
            } else {
                outln!("changed the password of user {}", a.name);
            }
            Ok(())
        }
        UserCommand::Delete(a) => {
            check_name(&a.name)?;
            let client = Client::new(&a.server)?;
            let answer = client.delete(&format!("{USERS}/{}", encode(&a.name)))?;
            if a.server.json() {
                print_or(&answer, json!({"name": a.name, "deleted": true}));
            } else {
                outln!("deleted user {}", a.name);
            }
            Ok(())
        }
    }
}

fn to_json<T: serde::Serialize>(body: &T) -> Result<Value, CliError> {
    serde_json::to_value(body).map_err(|e| CliError::Usage(format!("encoding the request: {e}")))
}

fn print_or(answer: &Answer, fallback: Value) {
    if answer.body.is_empty() {
        outln!("{fallback}");
    } else {
        answer.print_raw();
    }
}

fn check_name(name: &str) -> Result<(), CliError> {
    if valid_user_name(name) {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "user name {:?} is not acceptable: 1-{MAX_USER_NAME_LEN} letters, digits, '-', '_', \
             '.', '@'",
            truncate(name, 80)
        )))
    }
}

/// The new password: the first line of `file`, else of stdin when it is not a terminal.
fn new_password(file: Option<&Path>) -> Result<String, CliError> {
    let line = match file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                CliError::Usage(format!(
                    "cannot read --new-password-file {}: {e}",
                    path.display()
                ))
            })?;
            text.lines().next().unwrap_or_default().to_string()
        }
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                return Err(CliError::Usage(
                    "no new password: give --new-password-file FILE, or the password on stdin \
                     (printf '%s\\n' \"$PASSWORD\" | nodetrust user ...); it is never taken from \
                     a command-line value"
                        .into(),
                ));
            }
            let mut line = String::new();
            stdin
                .lock()
                .take(MAX_PASSWORD_LEN as u64 * 4 + 2)
                .read_line(&mut line)
                .map_err(|e| {
                    CliError::Usage(format!("cannot read the new password on stdin: {e}"))
                })?;
            line.trim_end_matches(['\n', '\r']).to_string()
        }
    };
    let n = line.chars().count();
    if !(MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&n) {
        return Err(CliError::Usage(format!(
            "the new password has {n} characters; it must have {MIN_PASSWORD_LEN} to \
             {MAX_PASSWORD_LEN}"
        )));
    }
    Ok(line)
}

/// A JSON value as one printable line.
fn shown(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    printable(&truncate(&s, 256), false)
}

fn print_users(answer: &Answer) -> Result<(), CliError> {
    let v = answer.json()?;
    let users = v
        .get("users")
        .and_then(Value::as_array)
        .ok_or_else(|| CliError::Server {
            status: answer.status,
            reason: "unexpected_answer".into(),
            message: "the server's answer has no \"users\" list; is the URL that of a nodetrust \
                      Trust Server of this version?"
                .into(),
            hint: None,
            json: false,
        })?;
    if users.is_empty() {
        outln!("no users");
        return Ok(());
    }
    let mut rows = vec![vec!["NAME".to_string(), "ROLE".into(), "CREATED".into()]];
    for u in users {
        rows.push(vec![
            shown(u.get("name").unwrap_or(&Value::Null)),
            shown(u.get("role").unwrap_or(&Value::Null)),
            shown(u.get("created").unwrap_or(&Value::Null)),
        ]);
    }
    crate::admin::print_table(&rows);
    Ok(())
}
