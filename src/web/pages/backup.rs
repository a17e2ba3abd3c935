//! `GET /backup`: downloads a backup made now (the store's consistent snapshot with the
//! configuration and key files, as `pasarela backup` writes it; restore it with
//! `pasarela restore FILE`).

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::{PageError, WebState};

/// The download.
pub async fn download(State(state): State<WebState>) -> Result<Response, PageError> {
    let store = state.db_path.clone();
    let files = state.backup_files.as_ref().clone();
    let now = crate::web::office_time::unix_now() as i64;
    let bytes = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let mut token = [0u8; 8];
        rand::fill(&mut token);
        let target = std::env::temp_dir().join(format!(
            "pasarela-backup-{}.db",
            token.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ));
        let made = crate::store::backup::backup(&store, &target, &files, now)
            .map_err(|e| e.to_string())
            .and_then(|_| std::fs::read(&target).map_err(|e| e.to_string()));
        let _ = std::fs::remove_file(&target);
        made
    })
    .await
    .map_err(|_| PageError::Task)?;
    let bytes = match bytes {
        Ok(b) => b,
        Err(e) => {
            tracing::error!("dashboard: backup failed: {e}");
            return Err(PageError::Task);
        }
    };
    let name = format!(
        "attachment; filename=\"pasarela-backup-{}.db\"",
        chrono_day(now)
    );
    tracing::info!(bytes = bytes.len(), "dashboard: backup downloaded");
    Ok((
        [
            (header::CONTENT_TYPE, "application/vnd.sqlite3".to_owned()),
            (header::CONTENT_DISPOSITION, name),
        ],
        Body::from(bytes),
    )
        .into_response())
}

/// `YYYYMMDD` (UTC) of a unix time.
fn chrono_day(unix: i64) -> String {
    jiff::Timestamp::from_second(unix)
        .map(|t| t.strftime("%Y%m%d").to_string())
        .unwrap_or_else(|_| "backup".to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn day_of_unix_time() {
        assert_eq!(super::chrono_day(0), "19700101");
        assert_eq!(super::chrono_day(1_796_256_000), "20261203");
    }
}
