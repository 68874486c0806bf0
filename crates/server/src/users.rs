//! The accounts API (`/mtwilson/v2/users`, admin only): list, create, change a password,
//! delete. Types are [`nodetrust_proto::users`]'s. Passwords are hashed with argon2id within
//! the authenticator's concurrency bound; a password change or a deletion drops the account's
//! cached logins at once, so the old password stops working immediately. The last admin
//! cannot be deleted.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nodetrust_proto::users::{
    valid_user_name, NewPassword, NewUser, UserList, UserRole, UserView, MAX_PASSWORD_LEN,
    MAX_USER_NAME_LEN, MIN_PASSWORD_LEN,
};

use crate::auth::hash_password;
use crate::error::{ApiError, ApiJson};
use crate::extract::AdminCaller;
use crate::state::AppState;
use crate::store::{UserDeleted, UserRow};

fn view(u: &UserRow, created: i64) -> Result<UserView, ApiError> {
    Ok(UserView {
        name: u.name.clone(),
        role: UserRole::parse(&u.role)
            .ok_or_else(|| ApiError::Internal(format!("user {} has unknown role", u.name)))?,
        created: nodetrust_proto::trust::rfc3339(created),
    })
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if valid_user_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "bad_user_name",
            format!(
                "a user name is 1-{MAX_USER_NAME_LEN} characters of letters, digits, '-', '_', '.', '@'"
            ),
        ))
    }
}

fn check_password(password: &str) -> Result<(), ApiError> {
    let n = password.chars().count();
    if (MIN_PASSWORD_LEN..=MAX_PASSWORD_LEN).contains(&n) && password.len() <= 4 * MAX_PASSWORD_LEN
    {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "bad_password",
            format!("a password is {MIN_PASSWORD_LEN}-{MAX_PASSWORD_LEN} characters"),
        ))
    }
}

async fn hash(state: &AppState, password: String) -> Result<String, ApiError> {
    state
        .auth
        .run_bounded(move || hash_password(&password))
        .await?
        .map_err(ApiError::Internal)
}

/// `GET /mtwilson/v2/users`.
#[utoipa::path(get, path = "/mtwilson/v2/users", operation_id = "list_users",
    summary = "List accounts (never passwords)",
    security(("basic" = ["admin"])),
    responses((status = 200, body = UserList)))]
pub async fn list(State(state): State<AppState>, _who: AdminCaller) -> Result<Response, ApiError> {
    let users = state
        .store
        .users()
        .await?
        .iter()
        .map(|(u, created)| view(u, *created))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(UserList { users }).into_response())
}

/// `POST /mtwilson/v2/users`.
#[utoipa::path(post, path = "/mtwilson/v2/users", operation_id = "create_user",
    summary = "Create an account",
    security(("basic" = ["admin"])),
    request_body = NewUser,
    responses((status = 201, body = UserView),
        (status = 409, description = "the name is taken", body = nodetrust_proto::ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    who: AdminCaller,
    ApiJson(req): ApiJson<NewUser>,
) -> Result<Response, ApiError> {
    check_name(&req.name)?;
    check_password(&req.password)?;
    let phc = hash(&state, req.password).await?;
    let now = state.now_ms();
    let row = UserRow {
        name: req.name.clone(),
        password_hash: phc,
        role: req.role.as_str().to_string(),
    };
    if !state.store.create_user(&row, now).await? {
        return Err(ApiError::ConflictWith {
            reason: "user_exists",
            message: format!(
                "a user named {} exists; change its password with PUT /mtwilson/v2/users/{}/password or delete it first",
                req.name, req.name
            ),
        });
    }
    tracing::info!(user = %req.name, role = %req.role, by = %who.0.name, "account created");
    Ok((StatusCode::CREATED, Json(view(&row, now)?)).into_response())
}

/// `PUT /mtwilson/v2/users/{name}/password`.
#[utoipa::path(put, path = "/mtwilson/v2/users/{name}/password", operation_id = "set_user_password",
    summary = "Change an account's password; its cached logins end at once",
    security(("basic" = ["admin"])),
    params(("name" = String, Path, description = "User name")),
    request_body = NewPassword,
    responses((status = 200, body = UserView),
        (status = 404, description = "no such account", body = nodetrust_proto::ErrorBody)))]
pub async fn set_password(
    State(state): State<AppState>,
    who: AdminCaller,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<NewPassword>,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    check_password(&req.password)?;
    let phc = hash(&state, req.password).await?;
    let now = state.now_ms();
    let Some(row) = state.store.set_password(&name, &phc, now).await? else {
        return Err(ApiError::NotFound(format!("no user named {name}")));
    };
    state.auth.forget_user(&name);
    tracing::info!(user = %name, by = %who.0.name, "password changed");
    Ok(Json(view(&row, now)?).into_response())
}

/// `DELETE /mtwilson/v2/users/{name}`.
#[utoipa::path(delete, path = "/mtwilson/v2/users/{name}", operation_id = "delete_user",
    summary = "Delete an account",
    security(("basic" = ["admin"])),
    params(("name" = String, Path, description = "User name")),
    responses((status = 204, description = "deleted"),
        (status = 404, description = "no such account", body = nodetrust_proto::ErrorBody),
        (status = 409, description = "the last admin cannot be deleted", body = nodetrust_proto::ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    who: AdminCaller,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    match state.store.delete_user(&name).await? {
        UserDeleted::Deleted => {
            state.auth.forget_user(&name);
            tracing::info!(user = %name, by = %who.0.name, "account deleted");
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        UserDeleted::NotFound => Err(ApiError::NotFound(format!("no user named {name}"))),
        UserDeleted::LastAdmin => Err(ApiError::ConflictWith {
            reason: "last_admin",
            message: format!("{name} is the last admin; create another admin before deleting it"),
        }),
    }
}
